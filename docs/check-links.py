#!/usr/bin/env python3
"""Checks the links of the built towntwin book (Python 3 standard library only).

    mdbook build docs && python3 docs/check-links.py      # check the book already built in docs/book
    python3 docs/check-links.py --build                   # build it first, and fail on mdbook's errors too

mdbook does not fail on a broken relative link, a missing {{#include}} or an unknown key in book.toml:
it logs and goes on. This script walks every HTML file of the built book and fails (exit 1), listing the
file and the link, when

- a relative link (href or src) names a file that is not in the built book;
- a #fragment names no element id (or anchor name) in the page it points to;
- a {{#...}} directive was left unexpanded in a page (an include whose file was not found);
- with --build: mdbook logged an error or a warning.

External http(s) links are listed with --external, never fetched (no network is needed or used).
"""

import argparse
import html.parser
import os
import posixpath
import re
import subprocess
import sys
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))


class Page(html.parser.HTMLParser):
    """The links, anchors and base of one HTML page."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.links = []  # (attribute, value, line)
        self.anchors = set()
        self.base = None
        self.in_script = False
        self.text_directives = []  # (directive, line)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("id", "name") if tag == "a" else ("id",):
            if a.get(key):
                self.anchors.add(a[key])
        if tag == "base" and a.get("href") is not None:
            self.base = a["href"]
        if tag == "script":
            self.in_script = True
        for key in ("href", "src"):
            value = a.get(key)
            if value is not None and tag in ("a", "img", "link", "script", "source", "iframe", "area"):
                self.links.append((key, value, self.getpos()[0]))

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag == "script":
            self.in_script = False

    def handle_endtag(self, tag):
        if tag == "script":
            self.in_script = False

    def handle_data(self, data):
        if self.in_script:
            return
        for m in re.finditer(r"\{\{#[a-z_]+\s+[^}\s][^}]*\}\}", data):
            self.text_directives.append((m.group(0), self.getpos()[0]))


def parse(path):
    page = Page()
    with open(path, encoding="utf-8") as f:
        page.feed(f.read())
    page.close()
    return page


def build(docs):
    """Runs `mdbook build`; returns its error and warning lines."""
    try:
        done = subprocess.run(["mdbook", "build", docs], capture_output=True, text=True)
    except FileNotFoundError:
        return ["mdbook is not installed: cargo install mdbook --locked --no-default-features"]
    out = done.stdout + done.stderr
    sys.stdout.write(out)
    bad = [line for line in out.splitlines() if re.search(r"\b(ERROR|WARN)\b", line)]
    if done.returncode != 0:
        bad.append(f"mdbook build exited {done.returncode}")
    return bad


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("book", nargs="?", default=os.path.join(HERE, "book"), help="the built book (default: docs/book)")
    ap.add_argument("--build", action="store_true", help="run `mdbook build` on docs/ first and fail on its errors and warnings")
    ap.add_argument("--external", action="store_true", help="list the external links (never fetched)")
    args = ap.parse_args()
    root = os.path.abspath(args.book)

    problems = []
    if args.build:
        problems += [f"mdbook: {line}" for line in build(HERE)]
    if not os.path.isdir(root):
        print(f"{root}: no built book here (run `mdbook build docs` first)", file=sys.stderr)
        return 1

    pages = {}
    for d, _, files in os.walk(root):
        for name in files:
            if name.endswith(".html"):
                path = os.path.join(d, name)
                pages[os.path.relpath(path, root).replace(os.sep, "/")] = parse(path)

    external = set()
    checked = 0
    for rel, page in sorted(pages.items()):
        for directive, line in page.text_directives:
            problems.append(f"{rel}:{line}: unexpanded directive {directive}")
        for attr, value, line in page.links:
            value = value.strip()
            url = urllib.parse.urlsplit(value)
            if url.scheme in ("http", "https"):
                external.add(value)
                continue
            if url.scheme or value.startswith("//"):
                continue  # mailto:, data:, javascript: and the like: nothing to resolve
            if value == "" or value == "#":
                continue
            checked += 1
            path = urllib.parse.unquote(url.path)
            # Where relative paths start from: the page's folder, or its <base href> (mdbook's 404 page
            # uses <base href="/">, the book's root).
            if path.startswith("/"):
                target = path.lstrip("/")
            else:
                start = posixpath.dirname(rel)
                if page.base is not None:
                    b = urllib.parse.urlsplit(page.base)
                    if b.scheme or b.netloc:
                        continue  # resolved against another site
                    start = b.path.strip("/")
                target = posixpath.join(start, path) if path else rel
            target = posixpath.normpath(target)
            if target == "." or target == "":
                target = "index.html"
            if target.startswith(".."):
                problems.append(f"{rel}:{line}: {attr}=\"{value}\" points outside the book")
                continue
            full = os.path.join(root, *target.split("/"))
            if os.path.isdir(full):
                target = posixpath.join(target, "index.html")
                full = os.path.join(full, "index.html")
            if not os.path.isfile(full):
                problems.append(f"{rel}:{line}: {attr}=\"{value}\": no file {target} in the book")
                continue
            fragment = urllib.parse.unquote(url.fragment)
            if fragment and target.endswith(".html"):
                anchors = pages[target].anchors if target in pages else parse(full).anchors
                if fragment not in anchors:
                    problems.append(f"{rel}:{line}: {attr}=\"{value}\": no anchor #{fragment} in {target}")

    if args.external and external:
        print(f"external links ({len(external)}, not fetched):")
        for e in sorted(external):
            print(f"  {e}")
    # mdbook draws each image twice (the picture and its zoomed copy): report each problem once.
    problems = list(dict.fromkeys(problems))
    if problems:
        print(f"{len(problems)} problem(s) in {root}:", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    print(f"{len(pages)} pages, {checked} relative links and fragments resolved, {len(external)} external links listed (not fetched)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
