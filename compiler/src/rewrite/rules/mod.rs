//! The rule groups. Each group is a topic, a file, and a pass of the registry with the
//! same name (its file tests live in `tests/filetests/<name>/`); the `rewrite` pass runs
//! every group together in one e-graph.

use super::rule::{Exactness, RuleDef};

pub mod absorb_clamp;
pub mod fold_bias;
pub mod fold_qdq;
pub mod fuse_float;
pub mod fuse_int;
pub mod int_add;
pub mod int_pool;
pub mod lookup;
pub mod merge_requant;
pub mod merge_split;
pub mod move_scales;
pub mod pow2;
pub mod threshold;

/// A group of rules on one topic.
#[derive(Debug)]
pub struct Group {
    pub name: &'static str,
    pub summary: &'static str,
    pub rules: fn() -> Vec<RuleDef>,
}

/// Every group, in the order the `rewrite` pass lists them.
pub const GROUPS: &[Group] = &[
    Group {
        name: "fold-qdq",
        summary: "fold quantize(dequantize(x)) pairs and binarize of dequantize",
        rules: fold_qdq::rules,
    },
    Group {
        name: "move-scales",
        summary: "move quantize/dequantize (and casts of b1) through max_pool, reshape, flatten, transpose, concat, ...",
        rules: move_scales::rules,
    },
    Group {
        name: "absorb-clamp",
        summary: "absorb relu/clip before a quantize into requantize clamps",
        rules: absorb_clamp::rules,
    },
    Group {
        name: "fuse-int",
        summary: "fuse dequantize -> conv2d/gemm/matmul (-> quantize) into integer kernels; batch norm into weight scales; b1 operands",
        rules: fuse_int::rules,
    },
    Group {
        name: "int-add",
        summary: "quantized add/sub/mul of dequantized operands become integer add/sub/mul between requantizes",
        rules: int_add::rules,
    },
    Group {
        name: "int-pool",
        summary: "quantized global_avg_pool becomes a depthwise conv2d_int of ones and a requantize",
        rules: int_pool::rules,
    },
    Group {
        name: "lookup",
        summary: "quantize(f(dequantize(x))) of a unary f on at most 8 bits becomes a table lookup",
        rules: lookup::rules,
    },
    Group {
        name: "merge-requant",
        summary: "merge requantize chains, drop identity requantizes, requantize between quantized types",
        rules: merge_requant::rules,
    },
    Group {
        name: "merge-split",
        summary: "two integer convs of one input joined by a channel concat (a layer split by --sq-ratio) as one conv over both filter groups",
        rules: merge_split::rules,
    },
    Group {
        name: "pow2-shift",
        summary: "power-of-two requantize multipliers become shifts",
        rules: pow2::rules,
    },
    Group {
        name: "fold-bias",
        summary: "fold a constant add after conv2d/matmul/gemm into its bias",
        rules: fold_bias::rules,
    },
    Group {
        name: "fuse-float",
        summary: "a constant scale after conv2d into its weights; written-out hard-swish into hard_swish",
        rules: fuse_float::rules,
    },
    Group {
        name: "fuse-silu",
        summary: "written-out SiLU, x * sigmoid(x), into silu (float builds: the quantizer has no silu)",
        rules: fuse_float::silu_rules,
    },
    Group {
        name: "fold-threshold",
        summary: "sign/binarize/quantize after batch_norm (or of codes, or of codes minus a constant) become per-channel integer thresholds",
        rules: threshold::rules,
    },
];

/// Looks a group up by name.
pub fn group(name: &str) -> Option<&'static Group> {
    GROUPS.iter().find(|g| g.name == name)
}

/// Every rule of every group.
pub fn all_rules() -> Vec<RuleDef> {
    GROUPS.iter().flat_map(|g| (g.rules)()).collect()
}

/// The rules of the named groups; only exact ones unless `bounded`.
pub fn rules_of(groups: &[&str], bounded: bool) -> Result<Vec<RuleDef>, String> {
    let mut out = Vec::new();
    for &name in groups {
        let g = group(name).ok_or_else(|| {
            format!(
                "no rule group `{name}` (groups: {})",
                GROUPS.iter().map(|g| g.name).collect::<Vec<_>>().join(", ")
            )
        })?;
        out.extend(
            (g.rules)()
                .into_iter()
                .filter(|r| bounded || r.exactness == Exactness::Exact),
        );
    }
    Ok(out)
}
