//! Pictures of a [`Trace`]: a Graphviz DOT file and an SVG drawn here.
//!
//! **DOT** (`trace.dot`, for `dot -Tsvg` or any Graphviz viewer): a left-to-right graph of
//! transaction nodes (boxes: hop, short txid, block height or mempool, value in and fee)
//! and output nodes (ellipses: amount in BTC, address, owner, state), ranked by hop.
//! Unspent outputs are filled green, outputs spent beyond the depth limit orange and
//! point to a dashed box naming the spender, outputs not followed grey; our addresses are
//! drawn in blue.
//!
//! **SVG** (`trace.svg`): drawn without Graphviz, as a layered picture: one column per
//! hop, each transaction a box listing its outputs as rows (filled in the same colours),
//! and a curve from each followed output to the box of the transaction that spent it.
//! Within a column, boxes are ordered by where the coins they spend sit in the columns to
//! their left, which keeps curves short and mostly uncrossed for the chains of splits and
//! merges a trace is made of. Full txids and addresses are in each element's `<title>`
//! (a tooltip in a browser); the text shows them shortened.

use std::collections::HashMap;
use std::fmt::Write as _;

use super::{btc, short_txid, Hop, Output, OutputState, Trace};

const MARGIN: u32 = 20;
/// Height of the title and legend above the columns.
const TOP: u32 = 92;
const BOX_W: u32 = 500;
const GAP_X: u32 = 90;
const GAP_Y: u32 = 22;
const LINE: u32 = 17;
const PAD: u32 = 6;
/// Text lines above a box's output rows.
const HEADER_LINES: u32 = 3;
/// Width of one character at the font size used, rounded up (monospace, 11 px).
const CHAR_W: u32 = 7;
const MIN_WIDTH: u32 = 820;

const GREEN: &str = "#c6f1c1";
const ORANGE: &str = "#fbd9a8";
const GREY: &str = "#e6e6e6";
const BLUE: &str = "#1f4fbf";

/// Escapes text for XML content and attribute values.
fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Escapes text for a double-quoted DOT string (`\n` stays a line break).
fn dot_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// An address shortened for pictures: the first nine and last six characters.
fn short_address(o: &Output) -> String {
    match &o.address {
        Some(a) if a.chars().count() > 18 => {
            let head: String = a.chars().take(9).collect();
            let tail: String = a
                .chars()
                .skip(a.chars().count().saturating_sub(6))
                .collect();
            format!("{head}…{tail}")
        }
        Some(a) => a.clone(),
        None if o.state == OutputState::Unspendable => "OP_RETURN".into(),
        None => "script".into(),
    }
}

fn place(h: &Hop) -> String {
    match h.height {
        Some(height) => format!("block {height}"),
        None => "mempool".into(),
    }
}

fn money_line(h: &Hop) -> String {
    match (h.value_in_sat, h.fee_sat) {
        (Some(v), Some(f)) => format!("in {} BTC, fee {}", btc(v), btc(f)),
        _ if h.inputs.iter().all(|i| i.outpoint.is_none()) => {
            format!("coinbase, out {} BTC", btc(h.value_out_sat))
        }
        _ => format!(
            "out {} BTC (an input's value unknown)",
            btc(h.value_out_sat)
        ),
    }
}

/// Where a hop's coins came from, in a few words.
fn from_line(h: &Hop) -> String {
    let mut ours: Vec<String> = Vec::new();
    let mut foreign = 0usize;
    for i in &h.inputs {
        match &i.owner {
            Some(o) => {
                let s = format!("{} #{}/{}", o.role, o.wallet, o.index);
                if !ours.contains(&s) {
                    ours.push(s);
                }
            }
            None if i.from_hop.is_none() => foreign += 1,
            None => {}
        }
    }
    let mut parts = Vec::new();
    if !ours.is_empty() {
        parts.push(format!("ours: {}", ours.join(", ")));
    }
    if h.hop > 0 {
        let traced = h.inputs.iter().filter(|i| i.from_hop.is_some()).count();
        parts.push(format!("{traced} traced input(s)"));
    }
    if foreign > 0 && (h.hop > 0 || ours.is_empty()) {
        parts.push(format!("{foreign} from elsewhere"));
    }
    let mut line = format!("from {}", parts.join(", "));
    if h.mixed {
        line.push_str(&format!("; traced {}", btc(h.traced_in_sat)));
    }
    line
}

fn state_text(o: &Output) -> String {
    match o.state {
        OutputState::Unspent => "UNSPENT".into(),
        OutputState::Spent { spent_hop, .. } => format!("→ hop {spent_hop}"),
        OutputState::SpentBeyondDepth { spent_by, .. } => {
            format!("→ {} (beyond depth)", &spent_by.to_string()[..8])
        }
        OutputState::Unspendable => "unspendable".into(),
        OutputState::NotFollowed => "not followed".into(),
    }
}

fn fill(o: &Output) -> &'static str {
    match o.state {
        OutputState::Unspent => GREEN,
        OutputState::SpentBeyondDepth { .. } => ORANGE,
        OutputState::Unspendable | OutputState::NotFollowed => GREY,
        OutputState::Spent { .. } => "#ffffff",
    }
}

fn class(o: &Output) -> &'static str {
    match o.state {
        OutputState::Unspent => "unspent",
        OutputState::Spent { .. } => "spent",
        OutputState::SpentBeyondDepth { .. } => "beyond-depth",
        OutputState::Unspendable => "unspendable",
        OutputState::NotFollowed => "not-followed",
    }
}

fn title(trace: &Trace) -> String {
    format!(
        "kura trace of {} · tip {} · depth limit {}",
        trace.start, trace.tip.height, trace.depth_limit
    )
}

fn summary(trace: &Trace) -> String {
    let t = &trace.totals;
    format!(
        "traced {} BTC: {} unspent ({} unconfirmed), {} beyond the depth limit, {} fees",
        btc(t.start_sat),
        btc(t.unspent_sat),
        btc(t.unspent_unconfirmed_sat),
        btc(t.beyond_depth_sat),
        btc(t.fees_sat)
    )
}

/// The trace as a Graphviz DOT graph.
pub fn dot(trace: &Trace) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "digraph trace {{");
    let _ = writeln!(
        s,
        "  graph [rankdir=LR, labelloc=t, fontname=\"monospace\", label=\"{}\"];",
        dot_text(&format!("{}\n{}", title(trace), summary(trace)))
    );
    let _ = writeln!(s, "  node [fontname=\"monospace\", fontsize=10];");
    let _ = writeln!(s, "  edge [color=\"#555555\"];");
    let mut max_hop = 0;
    for h in &trace.hops {
        max_hop = max_hop.max(h.hop);
        let label = format!(
            "hop {}  {}\n{}\n{}",
            h.hop,
            short_txid(&h.txid),
            place(h),
            money_line(h)
        );
        let _ = writeln!(
            s,
            "  \"tx_{}\" [shape=box, style=bold, label=\"{}\", tooltip=\"{}\"];",
            h.txid,
            dot_text(&label),
            h.txid
        );
        for o in &h.outputs {
            let id = format!("out_{}_{}", h.txid, o.vout);
            let mut label = format!("#{} {} BTC\n{}", o.vout, btc(o.value_sat), short_address(o));
            if o.traced_sat != o.value_sat && o.state != OutputState::NotFollowed {
                label.push_str(&format!("\ntraced {}", btc(o.traced_sat)));
            }
            if let Some(owner) = &o.owner {
                label.push_str(&format!("\n{owner}"));
            }
            if o.state == OutputState::Unspent {
                label.push_str("\nUNSPENT");
            }
            let color = if o.owner.is_some() { BLUE } else { "#333333" };
            let _ = writeln!(
                s,
                "  \"{id}\" [shape=ellipse, style=filled, fillcolor=\"{}\", color=\"{color}\", fontcolor=\"{color}\", label=\"{}\", tooltip=\"{}\"];",
                fill(o),
                dot_text(&label),
                dot_text(o.address.as_deref().unwrap_or(&o.script_hex))
            );
            let _ = writeln!(s, "  \"tx_{}\" -> \"{id}\";", h.txid);
            match o.state {
                OutputState::Spent { spent_by, .. } => {
                    let _ = writeln!(s, "  \"{id}\" -> \"tx_{spent_by}\";");
                }
                OutputState::SpentBeyondDepth {
                    spent_by,
                    spent_height,
                } => {
                    let at = spent_height.map_or("mempool".to_owned(), |h| format!("block {h}"));
                    let _ = writeln!(
                        s,
                        "  \"beyond_{spent_by}\" [shape=box, style=dashed, label=\"{}\"];",
                        dot_text(&format!(
                            "{}\n{at}\nbeyond the depth limit",
                            short_txid(&spent_by)
                        ))
                    );
                    let _ = writeln!(s, "  \"{id}\" -> \"beyond_{spent_by}\" [style=dashed];");
                }
                _ => {}
            }
        }
    }
    for hop in 0..=max_hop {
        let members: Vec<String> = trace
            .hops
            .iter()
            .filter(|h| h.hop == hop)
            .map(|h| format!("\"tx_{}\";", h.txid))
            .collect();
        if !members.is_empty() {
            let _ = writeln!(
                s,
                "  subgraph hop_{hop} {{ rank=same; {} }}",
                members.join(" ")
            );
        }
    }
    let _ = writeln!(s, "}}");
    s
}

/// Where each hop's box is (column x, top y, height), and where each column ends.
struct Layout {
    boxes: Vec<(u32, u32, u32)>,
    /// The bottom of each column's last box.
    bottoms: Vec<u32>,
    width: u32,
    height: u32,
}

fn box_height(h: &Hop) -> u32 {
    2 * PAD + LINE * (HEADER_LINES + h.outputs.len() as u32)
}

/// The middle of output row `vout` of a box whose top is `y`.
fn row_mid(y: u32, vout: u32) -> u32 {
    y + PAD + LINE * (HEADER_LINES + vout) + LINE / 2
}

fn layout(trace: &Trace) -> Layout {
    let hops = &trace.hops;
    let at: HashMap<_, usize> = hops.iter().enumerate().map(|(i, h)| (h.txid, i)).collect();
    let columns = hops.iter().map(|h| h.hop).max().map_or(1, |m| m + 1);
    let mut boxes = vec![(0u32, 0u32, 0u32); hops.len()];
    let mut bottoms = vec![TOP; columns as usize];
    let mut bottom = TOP;
    for column in 0..columns {
        // Order by the mean height of the coins spent (placed already: they are to the
        // left), then by chain order.
        let mut members: Vec<(u64, usize)> = hops
            .iter()
            .enumerate()
            .filter(|(_, h)| h.hop == column)
            .map(|(i, h)| {
                let ys: Vec<u64> = h
                    .inputs
                    .iter()
                    .filter_map(|input| {
                        let o = input.outpoint?;
                        let from = *at.get(&o.txid)?;
                        (from != i).then(|| u64::from(row_mid(boxes[from].1, o.vout)))
                    })
                    .collect();
                let key = if ys.is_empty() {
                    0
                } else {
                    ys.iter().sum::<u64>() / ys.len() as u64
                };
                (key, i)
            })
            .collect();
        members.sort();
        let x = MARGIN + column * (BOX_W + GAP_X);
        let mut y = TOP;
        for (_, i) in members {
            let h = box_height(&hops[i]);
            boxes[i] = (x, y, h);
            bottoms[column as usize] = y + h;
            y += h + GAP_Y;
        }
        bottom = bottom.max(y);
    }
    let width = (2 * MARGIN + columns * BOX_W + (columns - 1) * GAP_X).max(MIN_WIDTH);
    Layout {
        boxes,
        bottoms,
        width,
        height: bottom + MARGIN,
    }
}

/// Text cut to `chars` characters (with an ellipsis when cut).
fn fit(text: &str, chars: usize) -> String {
    if text.chars().count() <= chars {
        return text.to_owned();
    }
    let mut s: String = text.chars().take(chars.saturating_sub(1)).collect();
    s.push('…');
    s
}

/// The trace as an SVG picture (see the module documentation).
pub fn svg(trace: &Trace) -> String {
    let l = layout(trace);
    let at: HashMap<_, usize> = trace
        .hops
        .iter()
        .enumerate()
        .map(|(i, h)| (h.txid, i))
        .collect();
    let mut s = String::new();
    let _ = writeln!(s, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"DejaVu Sans Mono, Menlo, Consolas, monospace\" font-size=\"11\">",
        w = l.width,
        h = l.height
    );
    let _ = writeln!(
        s,
        "<defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\"><path d=\"M 0 0 L 10 5 L 0 10 z\" fill=\"#555555\"/></marker></defs>"
    );
    let _ = writeln!(
        s,
        "<rect x=\"0\" y=\"0\" width=\"{}\" height=\"{}\" fill=\"#ffffff\"/>",
        l.width, l.height
    );
    let _ = writeln!(
        s,
        "<text x=\"{MARGIN}\" y=\"26\" font-size=\"14\" font-weight=\"bold\">{}</text>",
        xml(&title(trace))
    );
    let _ = writeln!(
        s,
        "<text x=\"{MARGIN}\" y=\"46\">{}</text>",
        xml(&summary(trace))
    );
    // Legend.
    let mut x = MARGIN;
    for (color, text) in [
        (GREEN, "unspent: the coins are here now"),
        (ORANGE, "spent beyond the depth limit"),
        ("#ffffff", "spent within the trace"),
        (GREY, "not followed / unspendable"),
    ] {
        let _ = writeln!(
            s,
            "<rect x=\"{x}\" y=\"58\" width=\"14\" height=\"12\" fill=\"{color}\" stroke=\"#888888\"/><text x=\"{}\" y=\"68\">{}</text>",
            x + 18,
            xml(text)
        );
        x += 18 + CHAR_W * text.chars().count() as u32 + 16;
    }
    let _ = writeln!(
        s,
        "<text x=\"{x}\" y=\"68\" fill=\"{BLUE}\" font-weight=\"bold\">ours: a registered wallet</text>"
    );

    // Curves first, so the boxes are drawn over them.
    let _ = writeln!(s, "<g class=\"edges\" fill=\"none\" stroke=\"#555555\">");
    for (i, h) in trace.hops.iter().enumerate() {
        let (x2, y2, _) = l.boxes[i];
        let y2 = y2 + PAD + LINE / 2;
        for input in &h.inputs {
            let Some(o) = input.outpoint else { continue };
            let Some(&from) = at.get(&o.txid) else {
                continue;
            };
            if input.from_hop.is_none() {
                continue;
            }
            let (x1, y1, _) = l.boxes[from];
            let x1 = x1 + BOX_W;
            let y1 = row_mid(y1, o.vout);
            let bend = GAP_X / 2;
            let (c1, c2) = (trace.hops[from].hop as usize, h.hop as usize);
            // An edge over columns in between runs below their boxes, not behind them.
            let d = match (c1 + 1..c2).filter_map(|c| l.bottoms.get(c)).max() {
                Some(lowest) => {
                    let lane = lowest + GAP_Y / 2;
                    format!(
                        "M {x1} {y1} C {} {y1}, {} {lane}, {} {lane} L {} {lane} C {} {lane}, {} {y2}, {x2} {y2}",
                        x1 + bend,
                        x1 + bend,
                        x1 + GAP_X,
                        x2.saturating_sub(GAP_X),
                        x2.saturating_sub(bend),
                        x2.saturating_sub(bend)
                    )
                }
                None => format!(
                    "M {x1} {y1} C {} {y1}, {} {y2}, {x2} {y2}",
                    x1 + bend,
                    x2.saturating_sub(bend)
                ),
            };
            let _ = writeln!(
                s,
                "<path class=\"edge\" d=\"{d}\" stroke-width=\"1.5\" marker-end=\"url(#arrow)\"><title>{} → {}</title></path>",
                xml(&o.to_string()),
                h.txid
            );
        }
    }
    let _ = writeln!(s, "</g>");

    let text_chars = ((BOX_W - 2 * PAD) / CHAR_W) as usize;
    for (i, h) in trace.hops.iter().enumerate() {
        let (x, y, height) = l.boxes[i];
        let _ = writeln!(
            s,
            "<g class=\"hop\" id=\"tx-{}\" data-hop=\"{}\"><title>{} (hop {}, {})</title>",
            h.txid,
            h.hop,
            h.txid,
            h.hop,
            xml(&place(h))
        );
        let _ = writeln!(
            s,
            "<rect x=\"{x}\" y=\"{y}\" width=\"{BOX_W}\" height=\"{height}\" rx=\"4\" fill=\"#f7f9fc\" stroke=\"#333333\"/>"
        );
        let tx_x = x + PAD;
        let right_x = x + BOX_W - PAD;
        let base = |line: u32| y + PAD + LINE * line + 12;
        let _ = writeln!(
            s,
            "<text x=\"{tx_x}\" y=\"{}\" font-weight=\"bold\">hop {}  {}</text><text x=\"{right_x}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            base(0),
            h.hop,
            xml(&short_txid(&h.txid)),
            base(0),
            xml(&place(h))
        );
        let _ = writeln!(
            s,
            "<text x=\"{tx_x}\" y=\"{}\">{}</text>",
            base(1),
            xml(&fit(&money_line(h), text_chars))
        );
        let _ = writeln!(
            s,
            "<text x=\"{tx_x}\" y=\"{}\" fill=\"#555555\">{}</text>",
            base(2),
            xml(&fit(&from_line(h), text_chars))
        );
        for o in &h.outputs {
            let row_y = y + PAD + LINE * (HEADER_LINES + o.vout);
            let ours = o.owner.is_some();
            let color = if ours { BLUE } else { "#111111" };
            let left = format!("#{} {} {}", o.vout, btc(o.value_sat), short_address(o));
            let mut right = state_text(o);
            if let Some(owner) = &o.owner {
                right = format!("{owner} · {right}");
            }
            let room = text_chars.saturating_sub(left.chars().count() + 2);
            let tooltip = format!(
                "{}:{} {} BTC (traced {}) {}{}",
                h.txid,
                o.vout,
                btc(o.value_sat),
                btc(o.traced_sat),
                o.address.as_deref().unwrap_or(&o.script_hex),
                o.owner
                    .as_ref()
                    .map(|w| format!(" {w}"))
                    .unwrap_or_default()
            );
            let _ = writeln!(
                s,
                "<g class=\"output {}\"><title>{}</title><rect x=\"{}\" y=\"{row_y}\" width=\"{}\" height=\"{LINE}\" fill=\"{}\"/><text x=\"{tx_x}\" y=\"{}\" fill=\"{color}\">{}</text><text x=\"{right_x}\" y=\"{}\" text-anchor=\"end\" fill=\"{color}\"{}>{}</text></g>",
                class(o),
                xml(&tooltip),
                x + 1,
                BOX_W - 2,
                fill(o),
                row_y + 12,
                xml(&left),
                row_y + 12,
                if ours || o.state == OutputState::Unspent {
                    " font-weight=\"bold\""
                } else {
                    ""
                },
                xml(&fit(&right, room))
            );
        }
        let _ = writeln!(s, "</g>");
    }
    let _ = writeln!(s, "</svg>");
    s
}
