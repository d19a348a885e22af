"""The QC page: one HTML file, thumbnails inside it (data URIs), no script, style or font from elsewhere.

Order: cases that could not be drawn, then -- with a reference -- by mean Dice, worst first, otherwise flagged cases
before the others; ties by case id. Each tile links to the full picture in ``cases/``.
"""
from __future__ import annotations

import json
from html import escape
from pathlib import Path
from urllib.parse import quote

TILE_COLOURS = {"placeholder": "#f6c5c5", "flagged": "#fbe7a6", "ok": "#d7e6f7"}
PAGE_BACKGROUND = "#ffffff"

_STYLE = """
body { font-family: sans-serif; margin: 16px; background: %(bg)s; color: #111; }
h1 { font-size: 20px; margin: 0 0 6px 0; }
.summary { margin: 0 0 12px 0; }
.grid { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
.tile { width: 300px; margin: 0; padding: 8px; border-radius: 4px; font-size: 12px; }
.tile img { width: 300px; display: block; background: #000; }
.tile figcaption { margin-top: 4px; overflow-wrap: anywhere; }
.tile.placeholder { background: %(placeholder)s; }
.tile.flagged { background: %(flagged)s; }
.tile.ok { background: %(ok)s; }
.case { font-weight: bold; font-size: 13px; }
.flags { color: #8a1c00; }
table { border-collapse: collapse; font-size: 12px; margin-top: 8px; }
td, th { border: 1px solid #bbb; padding: 2px 6px; text-align: left; }
details pre { font-size: 11px; white-space: pre-wrap; }
""" % {"bg": PAGE_BACKGROUND, **TILE_COLOURS}


def status(entry: dict) -> str:
    return "placeholder" if entry["placeholder"] else "flagged" if entry["flags"] else "ok"


def order(entries: list[dict]) -> list[dict]:
    """Entries in page order (see the module docstring)."""
    rank = {"placeholder": 0, "flagged": 1, "ok": 2}
    if any(e.get("mean_dice") is not None for e in entries):
        def key(e):
            d = e.get("mean_dice")
            return (e["placeholder"] is None, -1.0 if d is None or d != d else d, e["case"])
    else:
        def key(e):
            return (rank[status(e)], e["case"])
    return sorted(entries, key=key)


def _caption(e: dict) -> str:
    parts = [f'<span class="case">{escape(e["case"])}</span>']
    if e["placeholder"]:
        parts.append(f'<span class="flags">not drawn: {escape(e["placeholder"])}</span>')
    parts.append(f'<span class="flags">{escape(", ".join(e["flags"]))}</span>' if e["flags"] else "no flags")
    if e["volumes"]:
        parts.append("mm³: " + escape(", ".join(f"{k} {v:.0f}" for k, v in e["volumes"].items())))
    if e.get("dice"):
        parts.append("Dice: " + escape(", ".join(f"{k} {v:.3f}" for k, v in e["dice"].items())))
    return "<br>".join(parts)


def write_index(path: str | Path, entries: list[dict], settings: dict, title: str, seconds: float,
                sections: list[tuple[str, list[dict]]] | None = None) -> Path:
    """Write the page. ``entries`` need ``case``, ``flags``, ``volumes``, ``placeholder``, ``thumb`` (data URI or
    None: listed in a table instead of drawn), ``href``; optionally ``dice`` and ``mean_dice``. ``sections`` (a
    heading and its entries, in the given order) replaces the single ordered grid."""
    entries = order(entries)
    n = {s: sum(status(e) == s for e in entries) for s in TILE_COLOURS}
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>QC: {escape(title)}</title><style>{_STYLE}</style></head><body>",
           f"<h1>QC: {escape(title)}</h1>",
           f'<p class="summary">{len(entries)} case(s): {n["placeholder"]} not drawable, {n["flagged"]} flagged, '
           f'{n["ok"]} without flags. Order: '
           + ("not drawable first, then mean Dice, worst first." if any(e.get("mean_dice") is not None
                                                                         for e in entries)
              else "not drawable, flagged, the rest.")
           + f" Made in {seconds:.0f} s. Click a picture for full size.</p>",
           f"<details><summary>settings</summary><pre>{escape(json.dumps(settings, indent=2, ensure_ascii=False))}"
           f"</pre></details>"]
    for heading, group in sections or [(None, entries)]:
        if heading:
            out.append(f"<h2>{escape(heading)}</h2>")
        out.append('<div class="grid">')
        for e in group:
            if e["thumb"] is None:
                continue
            out.append(f'<figure class="tile {status(e)}" data-case="{escape(e["case"])}" '
                       f'data-flags="{escape(";".join(e["flags"]))}">'
                       f'<a href="{escape(quote(e["href"]))}"><img src="{e["thumb"]}" alt="{escape(e["case"])}"></a>'
                       f"<figcaption>{_caption(e)}</figcaption></figure>")
        out.append("</div>")
    undrawn = [e for e in entries if e["thumb"] is None]
    if undrawn:
        out.append(f"<h2>Not drawn (--only-flagged): {len(undrawn)} case(s) without flags</h2><table>"
                   "<tr><th>case</th><th>volumes (mm³)</th></tr>")
        out += [f'<tr data-case="{escape(e["case"])}"><td>{escape(e["case"])}</td><td>'
                + escape(", ".join(f"{k} {v:.0f}" for k, v in e["volumes"].items())) + "</td></tr>" for e in undrawn]
        out.append("</table>")
    out.append("</body></html>")
    path = Path(path)
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return path
