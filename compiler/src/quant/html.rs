//! The bit-width report as one self-contained HTML page (`--report FILE.html`): no
//! script, no network; the graph and the sensitivity curves are inline SVG.
//!
//! The page has, for a quantized model:
//! - the graph of its conv/gemm/matmul layers (an edge where one layer's result reaches
//!   another's input through other ops), each node coloured by its weight bits;
//! - the per-layer table: chosen bits, kernel, weight bytes, every candidate's measured
//!   error (when a sensitivity was measured);
//! - the sensitivity curves: error against weight bits, one line per layer;
//! - the predicted error of the plan beside the measured one.
//!
//! Every layer row is `<tr class="layer" data-layer=NAME data-wbits=W data-abits=A>` and
//! every graph node `<g class="node" data-layer=NAME data-wbits=W>`, so a test can check
//! the page against the JSON report.

use std::fmt::Write;

/// One layer of the page.
#[derive(Clone, Debug)]
pub struct HtmlLayer {
    pub name: String,
    pub op: String,
    pub wbits: u8,
    pub abits: u8,
    pub kernel: String,
    pub weight_bytes: u64,
    /// Measured candidates (weight bits, activation bits, error); may be empty.
    pub candidates: Vec<(u8, u8, f64)>,
    /// Indices of the layers whose results reach this layer's input.
    pub preds: Vec<usize>,
}

/// The page's content.
#[derive(Clone, Debug, Default)]
pub struct HtmlReport {
    pub model: String,
    pub target: String,
    /// How the bits were chosen (`--bits 4`, `--budget avg-bits=3 (exact)`, ...).
    pub how: String,
    /// The error measure of the candidates (`KL of the softmax outputs`, `MSE`).
    pub metric: String,
    pub predicted: Option<f64>,
    pub measured: Option<f64>,
    pub weight_bytes: u64,
    pub float_weight_bytes: u64,
    pub layers: Vec<HtmlLayer>,
    pub notes: Vec<String>,
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            _ => o.push(c),
        }
    }
    o
}

/// A colour per weight bit-width (1 bit dark red .. 8 bits blue).
fn colour(bits: u8) -> &'static str {
    match bits {
        1 => "#b2182b",
        2 => "#ef8a62",
        3 => "#fddbc7",
        4 => "#d1e5f0",
        5..=7 => "#67a9cf",
        _ => "#2166ac",
    }
}

fn sci(x: f64) -> String {
    if x == 0.0 {
        "0".into()
    } else {
        format!("{x:.3e}")
    }
}

impl HtmlReport {
    /// Layer depth in the graph (longest path from a layer without predecessors).
    fn depths(&self) -> Vec<usize> {
        let mut d = vec![0usize; self.layers.len()];
        for i in 0..self.layers.len() {
            for &p in &self.layers[i].preds {
                if p < i {
                    d[i] = d[i].max(d[p] + 1);
                }
            }
        }
        d
    }

    fn graph_svg(&self, o: &mut String) {
        let depth = self.depths();
        let rows = depth.iter().copied().max().map_or(0, |m| m + 1);
        let mut slot = vec![0usize; self.layers.len()];
        let mut per_row = vec![0usize; rows];
        for (i, &d) in depth.iter().enumerate() {
            slot[i] = per_row[d];
            per_row[d] += 1;
        }
        let (bw, bh, gx, gy) = (220.0, 34.0, 30.0, 26.0);
        let cols = per_row.iter().copied().max().unwrap_or(1).max(1);
        let width = cols as f64 * (bw + gx) + gx;
        let height = rows as f64 * (bh + gy) + gy;
        let pos = |i: usize| -> (f64, f64) {
            (
                gx + slot[i] as f64 * (bw + gx),
                gy + depth[i] as f64 * (bh + gy),
            )
        };
        let _ = writeln!(
            o,
            "<svg class=\"graph\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\">"
        );
        for (i, l) in self.layers.iter().enumerate() {
            for &p in &l.preds {
                let (x0, y0) = pos(p);
                let (x1, y1) = pos(i);
                let _ = writeln!(
                    o,
                    "<line class=\"edge\" x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#888\" stroke-width=\"1.5\"/>",
                    x0 + bw / 2.0,
                    y0 + bh,
                    x1 + bw / 2.0,
                    y1
                );
            }
        }
        for (i, l) in self.layers.iter().enumerate() {
            let (x, y) = pos(i);
            let fg = if l.wbits <= 2 || l.wbits >= 5 {
                "#fff"
            } else {
                "#000"
            };
            let _ = writeln!(
                o,
                "<g class=\"node\" data-layer=\"{}\" data-wbits=\"{}\" data-abits=\"{}\"><title>{} ({}): w{} a{}, {}</title><rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bw}\" height=\"{bh}\" rx=\"5\" fill=\"{}\" stroke=\"#333\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\" fill=\"{fg}\">{} w{}a{}</text></g>",
                esc(&l.name),
                l.wbits,
                l.abits,
                esc(&l.name),
                esc(&l.op),
                l.wbits,
                l.abits,
                esc(&l.kernel),
                colour(l.wbits),
                x + bw / 2.0,
                y + bh / 2.0 + 4.0,
                esc(&truncate(&l.name, 26)),
                l.wbits,
                l.abits
            );
        }
        o.push_str("</svg>\n");
    }

    /// Error against weight bits, one polyline per layer (at each weight width the least
    /// error over activation widths), log scale.
    fn curves_svg(&self, o: &mut String) {
        let bits = [1u8, 2, 3, 4, 8];
        let series: Vec<(usize, Vec<(u8, f64)>)> = self
            .layers
            .iter()
            .enumerate()
            .filter_map(|(i, l)| {
                let pts: Vec<(u8, f64)> = bits
                    .iter()
                    .filter_map(|&w| {
                        l.candidates
                            .iter()
                            .filter(|c| c.0 == w && c.2 > 0.0)
                            .map(|c| c.2)
                            .min_by(f64::total_cmp)
                            .map(|e| (w, e))
                    })
                    .collect();
                (!pts.is_empty()).then_some((i, pts))
            })
            .collect();
        if series.is_empty() {
            o.push_str("<p>No sensitivity was measured (it needs <code>--budget</code> with calibration data).</p>\n");
            return;
        }
        let all: Vec<f64> = series
            .iter()
            .flat_map(|s| s.1.iter().map(|p| p.1))
            .collect();
        let lo = all
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min)
            .log10()
            .floor();
        let hi = all
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max)
            .log10()
            .ceil()
            .max(lo + 1.0);
        let (w, h, ml, mb) = (560.0, 300.0, 60.0, 30.0);
        let x = |b: u8| {
            ml + (bits.iter().position(|&v| v == b).unwrap_or(0) as f64) / 4.0 * (w - ml - 20.0)
        };
        let y = |e: f64| 10.0 + (hi - e.log10()) / (hi - lo) * (h - mb - 10.0);
        let _ = writeln!(
            o,
            "<svg class=\"curves\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\">"
        );
        for &b in &bits {
            let _ = writeln!(
                o,
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">{b} bit</text>",
                x(b),
                h - 10.0
            );
        }
        let mut e = lo;
        while e <= hi {
            let _ = writeln!(
                o,
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\">1e{e}</text><line x1=\"{ml}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#eee\"/>",
                ml - 4.0,
                y(10f64.powf(e)) + 3.0,
                w - 20.0,
                y(10f64.powf(e)),
                y(10f64.powf(e))
            );
            e += 1.0;
        }
        for (k, (i, pts)) in series.iter().enumerate() {
            let hue = (k * 360 / series.len().max(1)) % 360;
            let path: Vec<String> = pts
                .iter()
                .map(|&(b, e)| format!("{:.1},{:.1}", x(b), y(e)))
                .collect();
            let _ = writeln!(
                o,
                "<polyline class=\"curve\" data-layer=\"{}\" fill=\"none\" stroke=\"hsl({hue},70%,40%)\" stroke-width=\"1.5\" points=\"{}\"><title>{}</title></polyline>",
                esc(&self.layers[*i].name),
                path.join(" "),
                esc(&self.layers[*i].name)
            );
        }
        o.push_str("</svg>\n");
    }

    /// The whole page.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let _ = write!(
            o,
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>qcc bit-width report: {}</title>\n<style>body{{font-family:sans-serif;margin:1.5em;}} table{{border-collapse:collapse;font-size:13px;}} td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right;}} td.l,th.l{{text-align:left;}} .chosen{{font-weight:bold;background:#ffe;}}</style></head><body>\n",
            esc(&self.model)
        );
        let _ = writeln!(
            o,
            "<h1>{}</h1>\n<p>Target {}; bits chosen by {}. Weights {} bytes in the object ({} as f32).</p>",
            esc(&self.model),
            esc(&self.target),
            esc(&self.how),
            self.weight_bytes,
            self.float_weight_bytes
        );
        o.push_str("<h2>Predicted and measured error</h2>\n<table class=\"errors\"><tr><th class=\"l\">measure</th><th>predicted (sum of per-layer sensitivities)</th><th>measured (the chosen plan, end to end)</th></tr>\n");
        let _ = writeln!(
            o,
            "<tr><td class=\"l\">{}</td><td id=\"predicted\">{}</td><td id=\"measured\">{}</td></tr></table>",
            esc(&self.metric),
            self.predicted.map_or("-".into(), sci),
            self.measured.map_or("-".into(), sci)
        );
        o.push_str("<h2>Graph</h2>\n<p>Conv/gemm/matmul layers, coloured by weight bits: ");
        for b in [1u8, 2, 3, 4, 8] {
            let _ = write!(
                o,
                "<span style=\"background:{};padding:0 6px;margin-right:4px;border:1px solid #333\">{b}</span>",
                colour(b)
            );
        }
        o.push_str("</p>\n");
        self.graph_svg(&mut o);
        o.push_str("<h2>Layers</h2>\n<table class=\"layers\"><tr><th class=\"l\">layer</th><th class=\"l\">op</th><th>weight bits</th><th>activation bits</th><th class=\"l\">kernel</th><th>weight bytes</th><th class=\"l\">candidates (w/a: error)</th></tr>\n");
        for l in &self.layers {
            let cands: Vec<String> = l
                .candidates
                .iter()
                .map(|&(w, a, e)| {
                    let c = format!("w{w}/a{a}: {}", sci(e));
                    if (w, a) == (l.wbits, l.abits) {
                        format!("<span class=\"chosen\">{c}</span>")
                    } else {
                        c
                    }
                })
                .collect();
            let _ = writeln!(
                o,
                "<tr class=\"layer\" data-layer=\"{}\" data-wbits=\"{}\" data-abits=\"{}\"><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td class=\"l\">{}</td><td>{}</td><td class=\"l\">{}</td></tr>",
                esc(&l.name),
                l.wbits,
                l.abits,
                esc(&l.name),
                esc(&l.op),
                l.wbits,
                l.abits,
                esc(&l.kernel),
                l.weight_bytes,
                cands.join(", ")
            );
        }
        o.push_str("</table>\n<h2>Sensitivity</h2>\n<p>Output error when only that layer is quantized, against its weight bits (the least error over activation bits).</p>\n");
        self.curves_svg(&mut o);
        if !self.notes.is_empty() {
            o.push_str("<h2>Notes</h2>\n<ul>\n");
            for n in &self.notes {
                let _ = writeln!(o, "<li>{}</li>", esc(n));
            }
            o.push_str("</ul>\n");
        }
        o.push_str("</body></html>\n");
        o
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let tail: String = s
            .chars()
            .rev()
            .take(n - 1)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("…{tail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_has_a_row_and_a_node_per_layer_and_escapes_names() {
        let layers = vec![
            HtmlLayer {
                name: "/conv<1>".into(),
                op: "conv2d".into(),
                wbits: 2,
                abits: 4,
                kernel: "k".into(),
                weight_bytes: 10,
                candidates: vec![(2, 4, 0.5), (8, 8, 0.001)],
                preds: vec![],
            },
            HtmlLayer {
                name: "fc".into(),
                op: "gemm".into(),
                wbits: 8,
                abits: 8,
                kernel: "k2".into(),
                weight_bytes: 20,
                candidates: vec![],
                preds: vec![0],
            },
        ];
        let page = HtmlReport {
            model: "m".into(),
            layers,
            predicted: Some(0.5),
            measured: Some(0.6),
            ..Default::default()
        }
        .render();
        assert_eq!(page.matches("<tr class=\"layer\"").count(), 2);
        assert_eq!(page.matches("<g class=\"node\"").count(), 2);
        assert!(page.contains("data-layer=\"/conv&lt;1&gt;\" data-wbits=\"2\""));
        assert!(!page.contains("<script"));
        assert!(!page.contains("src=\"http") && !page.contains("href=\"http"));
    }
}
