//! Compiles the digits CNN at build time (add quantization flags with `.flags([...])`,
//! e.g. `["--bits", "4", "--calib", "../../tests/models/digits_train.npz"]`).

fn main() {
    if let Err(e) = qcc::build::Build::new("../../tests/models/digits_cnn_folded.onnx")
        .name("digits")
        .compile()
    {
        panic!("{e:#}");
    }
}
