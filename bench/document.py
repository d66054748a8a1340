"""One document model for everything convbench writes for people to read: the report, the
micro-benchmark section and `compare`. A Document is sections of blocks (text, tables, images,
lists, preformatted text); it is rendered once to Markdown (images as files beside it) and once to
a self-contained HTML page (images embedded). Every string from a record is escaped in HTML here,
in one place.
"""
import base64
import html
import re
from typing import Any, List, NamedTuple, Optional


class Text(NamedTuple):
    """A paragraph; its line breaks are kept; `code` spans become <code> in HTML."""
    text: str
    css: Optional[str] = None


class Table(NamedTuple):
    """A pandas DataFrame of display strings; `strong` holds (row position, column) cells to bold."""
    frame: Any
    css: str = "results sortable"
    strong: frozenset = frozenset()


class Image(NamedTuple):
    """A PNG: `name` is its file name beside the Markdown (unique in the document)."""
    name: str
    png: bytes
    alt: str
    caption: Optional[str] = None


class Bullets(NamedTuple):
    items: List[str]


class Preformatted(NamedTuple):
    """Text already written as Markdown (kept as it is there; a <pre> block in HTML)."""
    text: str
    css: str = "method"


class Links(NamedTuple):
    """A line of links: (label, href) pairs; href is an anchor (#...) or a relative file path."""
    items: List[Any]
    lead: str = ""


class Grid(NamedTuple):
    """Blocks side by side in HTML (images two to a row); one after another in Markdown."""
    blocks: List[Any]


class Swatches(NamedTuple):
    """A legend of colours: (label, #rrggbb) pairs, written into the page as data."""
    items: List[Any]
    title: str = ""


class Section(NamedTuple):
    title: str
    blocks: List[Any]
    anchor: Optional[str] = None


class Document(NamedTuple):
    title: str
    intro: List[Any]
    sections: List[Section]


# --- Markdown ---------------------------------------------------------------------------------

def _md_cell(value):
    """A cell a Markdown table survives: no '|' or line break inside."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def _numeric(text):
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True


def markdown_table(table, tablefmt="pipe"):
    """The table as text; cells exactly as given (no reformatting of numbers), numeric columns
    right-aligned."""
    frame = table.frame.astype(object).where(table.frame.notna(), "").astype(str)
    align = ["right" if any(v for v in frame[c]) and all(_numeric(v) for v in frame[c] if v)
             else "left" for c in frame.columns]
    for row, column in table.strong:
        frame.iloc[row, frame.columns.get_loc(column)] = "**%s**" % frame.iloc[row][column]
    if tablefmt == "pipe":
        frame = frame.map(_md_cell)
        frame.columns = [_md_cell(c) for c in frame.columns]
    return frame.to_markdown(index=False, tablefmt=tablefmt, disable_numparse=True, colalign=align)


def _md_block(block, image_dir, tablefmt):
    if isinstance(block, Text):
        return block.text
    if isinstance(block, Table):
        return markdown_table(block, tablefmt)
    if isinstance(block, Image):
        return "![%s](%s/%s)" % (block.alt, image_dir, block.name)
    if isinstance(block, Bullets):
        return "\n".join("- " + item for item in block.items)
    if isinstance(block, Preformatted):
        return block.text
    if isinstance(block, Links):
        return block.lead + " · ".join("[%s](%s)" % (_md_cell(label), href)
                                       for label, href in block.items)
    if isinstance(block, Grid):
        return blocks_markdown(block.blocks, image_dir, tablefmt)
    if isinstance(block, Swatches):
        return block.title + ", ".join("%s `%s`" % item for item in block.items)
    raise TypeError("not a document block: %r" % (block,))


def blocks_markdown(blocks, image_dir="report_files", tablefmt="pipe", with_images=True):
    """The blocks as Markdown, one blank line between them (images left out for a terminal)."""
    return "\n\n".join(_md_block(b, image_dir, tablefmt) for b in blocks
                       if with_images or not isinstance(b, Image))


def section_markdown(section, with_images=True):
    return "## %s\n\n%s\n" % (section.title, blocks_markdown(section.blocks, with_images=with_images))


def to_markdown(doc, image_dir="report_files"):
    """(Markdown text, {image file name: png bytes})."""
    parts = ["# " + doc.title]
    if doc.intro:
        parts.append(blocks_markdown(doc.intro, image_dir))
    for section in doc.sections:
        parts.append("## " + section.title)
        if section.blocks:
            parts.append(blocks_markdown(section.blocks, image_dir))
    return "\n\n".join(parts) + "\n", images(doc)


def _flat(blocks):
    for block in blocks:
        if isinstance(block, Grid):
            for inner in _flat(block.blocks):
                yield inner
        else:
            yield block


def images(doc):
    found = {}
    for block in _flat(list(doc.intro) + [b for s in doc.sections for b in s.blocks]):
        if isinstance(block, Image):
            if block.name in found:
                raise ValueError("two images named %s in one document" % block.name)
            found[block.name] = block.png
    return found


# --- HTML -------------------------------------------------------------------------------------

def _inline(text):
    """Escaped text with `code` spans as <code>, **bold** as <strong>, line breaks kept."""
    escaped = html.escape(str(text))
    escaped = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", escaped)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped).replace("\n", "<br>")


def html_table(table):
    e = html.escape
    frame = table.frame
    out = ['<table class="%s">' % e(table.css), "<thead><tr>"]
    out += ["<th>%s</th>" % e(str(c)) for c in frame.columns]
    out.append("</tr></thead><tbody>")
    for i, row in enumerate(frame.itertuples(index=False)):
        cells = []
        for column, value in zip(frame.columns, row):
            text = "" if value is None else e(str(value))
            cells.append("<td><strong>%s</strong></td>" % text if (i, column) in table.strong
                         else "<td>%s</td>" % text)
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _html_block(block):
    e = html.escape
    if isinstance(block, Text):
        css = ' class="%s"' % e(block.css) if block.css else ""
        return "<p%s>%s</p>" % (css, _inline(block.text))
    if isinstance(block, Table):
        return html_table(block)
    if isinstance(block, Image):
        img = '<img alt="%s" src="data:image/png;base64,%s">' % (
            e(block.alt), base64.b64encode(block.png).decode("ascii"))
        if block.caption:
            return "<figure>%s<figcaption>%s</figcaption></figure>" % (img, _inline(block.caption))
        return img
    if isinstance(block, Bullets):
        return "<ul>%s</ul>" % "".join("<li>%s</li>" % _inline(item) for item in block.items)
    if isinstance(block, Preformatted):
        return '<pre class="%s">%s</pre>' % (e(block.css), e(block.text))
    if isinstance(block, Links):
        return '<p class="links">%s%s</p>' % (_inline(block.lead), " · ".join(
            '<a href="%s">%s</a>' % (e(href), e(label)) for label, href in block.items))
    if isinstance(block, Grid):
        return '<div class="grid">%s</div>' % "\n".join(_html_block(b) for b in block.blocks)
    if isinstance(block, Swatches):
        return '<p class="palette">%s%s</p>' % (_inline(block.title), " ".join(
            '<span class="swatch" data-backend="%s" data-colour="%s"><i style="background:%s">'
            '</i>%s</span>' % (e(label), e(colour), e(colour), e(label))
            for label, colour in block.items))
    raise TypeError("not a document block: %r" % (block,))


def section_html(section):
    anchor = ' id="%s"' % html.escape(section.anchor) if section.anchor else ""
    return "\n".join(["<section%s>" % anchor, "<h2>%s</h2>" % html.escape(section.title)]
                     + [_html_block(b) for b in section.blocks] + ["</section>"])


def to_html(doc):
    """A self-contained page: styles, embedded images and a sort-by-column script, no network."""
    body = ["<h1>%s</h1>" % html.escape(doc.title)] + [_html_block(b) for b in doc.intro]
    body += [section_html(section) for section in doc.sections]
    return PAGE.replace("{title}", html.escape(doc.title)).replace("{body}", "\n".join(body))


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<style>
body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}
th,td{padding:4px 8px;border-bottom:1px solid #ddd;text-align:right}
th{background:#f3f3f3;position:sticky;top:0}
table.sortable th{cursor:pointer}
table.results td:nth-child(-n+4),table.results td:last-child{text-align:left}
td:first-child{text-align:left}
img{display:block;margin:.5em 0;max-width:100%}
div.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(560px,1fr));gap:.5em 1.5em;align-items:start}
p.verdict{margin:.3em 0 .8em 0;line-height:1.45}
span.swatch{margin-right:1em;white-space:nowrap}
span.swatch i{display:inline-block;width:.9em;height:.9em;margin-right:.3em;vertical-align:-.1em}
p.provenance{color:#555;font-size:13px}
pre.method{white-space:pre-wrap;background:#f8f8f8;padding:1em}
</style></head><body>
{body}
<script>
// click a header to sort (numbers numerically, empty cells last)
document.querySelectorAll('table.sortable').forEach(function (t) {
  t.querySelectorAll('th').forEach(function (th, col) {
    th.addEventListener('click', function () {
      var rows = Array.from(t.tBodies[0].rows), asc = th.dataset.asc !== '1';
      rows.sort(function (a, b) {
        var x = a.cells[col].textContent, y = b.cells[col].textContent;
        if (x === '' || y === '') return (x === '') - (y === '');
        var nx = parseFloat(x), ny = parseFloat(y);
        var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
        return asc ? c : -c;
      });
      th.dataset.asc = asc ? '1' : '0';
      rows.forEach(function (r) { t.tBodies[0].appendChild(r); });
    });
  });
});
</script>
</body></html>
"""
