"""The try-it page's routes over real HTTP: its files, their security headers, info, and the off switch."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest

from predictor.ui.site import STATIC_DIR, load_static
from tests.support.servers import REPO, ServerProcess

FILES = ["app.js", "metrics.js", "upload.js", "style.css", "favicon.svg"]


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.script_bodies: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.script_bodies.append(data)


def csp_directives(header: str) -> dict[str, list[str]]:
    out = {}
    for part in header.split(";"):
        name, *sources = part.split()
        out[name] = sources
    return out


def test_csp_allows_only_this_origin_and_no_inline_script(ui_server: ServerProcess):
    r = ui_server.client.get("/")
    assert r.status_code == 200 and r.headers["content-type"] == "text/html; charset=utf-8"
    csp = csp_directives(r.headers["content-security-policy"])
    assert csp["default-src"] == ["'none'"]
    assert csp["script-src"] == ["'self'"] and csp["style-src"] == ["'self'"]
    assert csp["connect-src"] == ["'self'"]
    assert csp["img-src"] == ["'self'", "blob:"]  # thumbnails of the user's own files
    assert csp["frame-ancestors"] == ["'none'"] and csp["base-uri"] == ["'none'"]
    everything = " ".join(s for sources in csp.values() for s in sources)
    for loose in ("'unsafe-inline'", "'unsafe-eval'", "*", "http:", "https:", "data:"):
        assert loose not in everything.split(), loose
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["cross-origin-opener-policy"] == "same-origin"
    assert "access-control-allow-origin" not in r.headers


@pytest.mark.parametrize(
    ("name", "media_type"),
    [
        ("app.js", "text/javascript; charset=utf-8"),
        ("metrics.js", "text/javascript; charset=utf-8"),
        ("upload.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("favicon.svg", "image/svg+xml"),
    ],
)
def test_every_file_is_served_with_its_type_and_the_headers(ui_server: ServerProcess, name: str, media_type: str):
    r = ui_server.client.get(f"/ui/{name}")
    assert r.status_code == 200
    assert r.headers["content-type"] == media_type
    assert r.content == (STATIC_DIR / name).read_bytes()
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "script-src 'self'" in r.headers["content-security-policy"]
    again = ui_server.client.get(f"/ui/{name}", headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert ui_server.client.head(f"/ui/{name}").status_code == 200


@pytest.mark.parametrize(
    "path",
    ["/ui/site.py", "/ui/__init__.py", "/ui/static/app.js", "/ui/%2e%2e/site.py", "/ui/..%2fsite.py", "/ui/nope.js"],
)
def test_only_the_packaged_files_are_served(ui_server: ServerProcess, path: str):
    r = ui_server.client.get(path)
    assert r.status_code == 404, r.text
    assert "is not a file of the try-it page" in r.json()["error"]
    assert "import" not in r.text


def test_ui_prefix_redirects_to_the_page(ui_server: ServerProcess):
    for path in ("/ui", "/ui/"):
        r = ui_server.client.get(path, follow_redirects=False)
        assert r.status_code == 307 and r.headers["location"] == "../"
        assert ui_server.client.get(path, follow_redirects=True).url.path == "/"


def test_the_page_has_no_inline_script_style_or_handler():
    """What the CSP forbids is not in the page either (it would break, not run)."""
    parser = _Tags()
    parser.feed((STATIC_DIR / "index.html").read_text())
    assert not parser.script_bodies
    for tag, attrs in parser.tags:
        assert "style" not in attrs, tag
        assert not [a for a in attrs if a.startswith("on")], (tag, attrs)
        for ref in (attrs.get("src"), attrs.get("href")):
            assert ref is None or not ref.startswith(("/", "http:", "https:", "//")), ref  # relative: same origin
    scripts = [a for t, a in parser.tags if t == "script"]
    assert scripts == [{"type": "module", "src": "ui/app.js"}]


def test_info_reports_the_loaded_model_as_metrics_do(ui_server: ServerProcess):
    from prometheus_client.parser import text_string_to_metric_families

    info = ui_server.client.get("/ui/info.json").json()
    families = {f.name: f for f in text_string_to_metric_families(ui_server.metrics())}
    (sample,) = families["classifier_model_info"].samples
    expected = {k: sample.labels[k] for k in ("model", "backend", "device", "dtype")}
    assert {k: info[k] for k in expected} == expected
    assert info["model_version"] == sample.labels["version"]
    assert info["max_request_bytes"] == 32 * 1024 * 1024 and info["default_top_k"] == 5 and info["max_top_k"] == 100
    assert info["classes"] == 1000


def test_startup_log_prints_the_page_url_once(ui_server: ServerProcess):
    lines = [line for line in ui_server.log().splitlines() if "try-it page at" in line]
    assert len(lines) == 1 and f"http://localhost:{ui_server.port}/" in lines[0]


@pytest.mark.parametrize(
    "path", ["/", "/ui", "/ui/", "/ui/index.html", "/ui/app.js", "/ui/style.css", "/ui/info.json", "/ui/x/y"]
)
def test_disabled_serves_nothing_of_the_page(default_server: ServerProcess, path: str):
    """The default settings (enable_ui=false): 404 saying how to turn it on; the API still works."""
    r = default_server.client.get(path, follow_redirects=False)
    assert r.status_code == 404
    assert "enable_ui" in r.json()["error"] and "--enable_ui true" in r.json()["error"]
    assert "content-security-policy" not in r.headers
    assert "try-it page at" not in default_server.log()


def test_disabled_server_still_classifies(default_server: ServerProcess, cat_jpeg: bytes):
    default_server.assert_healthy(cat_jpeg)
    assert default_server.client.get("/v2/health/live").status_code == 200


def test_load_static_refuses_a_directory_without_the_page(tmp_path: Path):
    (tmp_path / "app.js").write_text("")
    with pytest.raises(FileNotFoundError, match=r"no index\.html"):
        load_static(tmp_path)


def test_load_static_serves_only_known_types(tmp_path: Path):
    for name in ("index.html", "app.js", "notes.txt", "secret.py"):
        (tmp_path / name).write_text(name)
    (tmp_path / "sub.js").mkdir()
    files = load_static(tmp_path)
    assert sorted(files) == ["app.js", "index.html"]
    assert files["app.js"].media_type.startswith("text/javascript")
    assert files["app.js"].etag != files["index.html"].etag  # the content's hash


def test_packaged_files_are_all_served_and_ship_in_the_wheel():
    import fnmatch
    import tomllib

    assert sorted(load_static()) == sorted([*FILES, "index.html"])
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["predictor"]
    for name in [*FILES, "index.html"]:
        assert any(fnmatch.fnmatch(f"ui/static/{name}", p) for p in patterns), name
