//! The reference interpreter on a real trained model: the digits CNN bundled as IR text
//! (`examples/interp/digits_cnn.qir`) reproduces ONNX Runtime's outputs
//! (`tests/models/digits_cnn_folded.ref.npz`, 16 test images).

use std::path::Path;

use qcc_ir::interp::{Tensor, TensorData};

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn digits_cnn_matches_onnx_runtime() {
    let text = std::fs::read_to_string(root().join("examples/interp/digits_cnn.qir")).unwrap();
    let m = qcc_ir::parse_module(&text).unwrap();
    qcc_ir::verify::verify(&m).unwrap();
    let refs = root().join("tests/models/digits_cnn_folded.ref.npz");
    let x = qcc::npy::read_npz_array(&refs, "x").unwrap();
    let y = qcc::npy::read_npz_array(&refs, "y").unwrap();
    let (TensorData::F32(xs), TensorData::F32(ys)) = (&x.data, &y.data) else {
        panic!("reference arrays are float32")
    };
    let n = x.shape[0];
    let mut worst = 0f32;
    for i in 0..n {
        let img = Tensor {
            shape: vec![1, 1, 8, 8],
            data: TensorData::F32(xs[i * 64..(i + 1) * 64].to_vec()),
        };
        let out = qcc_ir::interp::run(&m, &[img]).unwrap();
        let TensorData::F32(got) = &out[0].data else {
            panic!("logits are f32")
        };
        for (g, w) in got.iter().zip(&ys[i * 10..(i + 1) * 10]) {
            let err = (g - w).abs() / (1.0 + w.abs());
            worst = worst.max(err);
        }
    }
    assert!(worst < 1e-4, "largest relative difference {worst}");
}
