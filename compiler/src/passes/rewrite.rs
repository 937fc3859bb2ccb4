//! The rewrite passes: each rule group of `crate::rewrite::rules` as a pass of the
//! registry (same name), and `rewrite`, which runs every group together in one e-graph
//! so that the groups' rules can feed each other (move a quantize up, absorb a relu,
//! fuse the conv, merge the clamps, turn power-of-two multipliers into shifts).
//!
//! Set `QCC_REWRITE_REPORT=1` to print each run's report (e-graph size, stop reason,
//! rules applied) to stderr.

use qcc_ir::Module;

use crate::rewrite::{Options, Report, rules::GROUPS, run_groups};

fn run(m: &mut Module, groups: &[&str]) -> Result<bool, String> {
    let report: Report = run_groups(m, groups, &Options::default())?;
    if std::env::var_os("QCC_REWRITE_REPORT").is_some() {
        eprint!("// rewrite {}:\n{report}", groups.join(", "));
    }
    Ok(report.total_applied() > 0)
}

pub fn all(m: &mut Module) -> Result<bool, String> {
    let names: Vec<&str> = GROUPS.iter().map(|g| g.name).collect();
    run(m, &names)
}

pub fn fold_qdq(m: &mut Module) -> Result<bool, String> {
    run(m, &["fold-qdq"])
}

pub fn move_scales(m: &mut Module) -> Result<bool, String> {
    run(m, &["move-scales"])
}

pub fn absorb_clamp(m: &mut Module) -> Result<bool, String> {
    run(m, &["absorb-clamp"])
}

pub fn fuse_int(m: &mut Module) -> Result<bool, String> {
    run(m, &["fuse-int"])
}

pub fn merge_requant(m: &mut Module) -> Result<bool, String> {
    run(m, &["merge-requant"])
}

pub fn merge_split(m: &mut Module) -> Result<bool, String> {
    run(m, &["merge-split"])
}

pub fn pow2_shift(m: &mut Module) -> Result<bool, String> {
    run(m, &["pow2-shift"])
}

pub fn fold_bias(m: &mut Module) -> Result<bool, String> {
    run(m, &["fold-bias"])
}

/// The float fusions of an imported model: `fuse-float` and `fold-bias` together (a
/// scale folded into a conv2d lets the constant added after it fold into the bias).
pub fn fuse_float(m: &mut Module) -> Result<bool, String> {
    run(m, &["fuse-float", "fold-bias"])
}

/// Written-out SiLU into `silu` (float builds only: the quantizer has no `silu`).
pub fn fuse_silu(m: &mut Module) -> Result<bool, String> {
    run(m, &["fuse-silu"])
}

pub fn fold_threshold(m: &mut Module) -> Result<bool, String> {
    run(m, &["fold-threshold"])
}

pub fn int_add(m: &mut Module) -> Result<bool, String> {
    run(m, &["int-add"])
}

pub fn int_pool(m: &mut Module) -> Result<bool, String> {
    run(m, &["int-pool"])
}

pub fn lookup(m: &mut Module) -> Result<bool, String> {
    run(m, &["lookup"])
}
