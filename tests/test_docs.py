"""The documentation site (issue 19): it builds with warnings as errors, and the code its
guides show runs.

The guides show their code from ``docs/examples/test_*.py`` (``literalinclude``), pytest
modules that test what they show with the public plugin's realm; they run here in a
session of their own, as a user's tests would (this suite's realm is not theirs).
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

from tests.conftest import ROOT

DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"


def test_the_site_builds_with_warnings_as_errors(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "html"
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", DOCS, out],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Every guide and the generated reference are there, with their contents.
    for page in ["index", "settings", "api", "changelog"]:
        assert (out / f"{page}.html").is_file(), page
    for guide in (DOCS / "guides").glob("*.md"):
        html = (out / "guides" / f"{guide.stem}.html").read_text()
        assert "To be written" not in html, guide.name
    api = (out / "api.html").read_text()
    for name in ["KerberosGuard", "KerberosAuthMixin", "run_as_user", "KerberosSettings"]:
        assert f'id="tornado_kerb.{name}' in api or name in api, name


def test_every_example_is_shown_in_a_guide() -> None:
    shown = set()
    for page in DOCS.rglob("*.md"):
        shown.update(
            re.findall(r"literalinclude\}\s+(?:\.\./)?examples/(\S+\.py)", page.read_text())
        )
    examples = {path.name for path in EXAMPLES.glob("test_*.py")}
    assert examples, "no examples"
    assert examples <= shown, f"examples no guide shows: {sorted(examples - shown)}"
    assert shown <= examples, f"guides show examples that do not exist: {sorted(shown - examples)}"


def test_the_guides_examples_run() -> None:
    # A session of their own: the plugin's realm, never this suite's (KRB5_* not passed).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KRB5", "KPROP", "PYTEST_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfE", str(EXAMPLES)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    passed = re.search(r"(\d+) passed", result.stdout)
    assert passed and int(passed.group(1)) >= len(list(EXAMPLES.glob("test_*.py")))
    assert "skipped" not in result.stdout.splitlines()[-1]


def test_the_readme_shows_the_first_app_the_guide_runs() -> None:
    example = (EXAMPLES / "test_getting_started.py").read_text()
    app = example.split("# --- app\n", 1)[1].split("# --- end app\n", 1)[0].strip("\n")
    readme = (ROOT / "README.md").read_text()
    assert f"```python\n{app}\n```" in readme
    assert len(readme.splitlines()) < 200  # a first visit's worth; the rest is in docs/


def _python_blocks() -> list[tuple[str, str]]:
    pages = [ROOT / "README.md", *DOCS.rglob("*.md")]
    return [
        (f"{page.relative_to(ROOT)}:{page.read_text()[: m.start()].count(chr(10)) + 1}", m[1])
        for page in pages
        for m in re.finditer(r"^```python\n(.*?)^```", page.read_text(), re.S | re.M)
    ]


def test_every_python_block_in_the_docs_is_checked() -> None:
    """Blocks shown as plain code (fragments of a deployment: a keytab path, a Redis URL)
    cannot run here; each is still compiled, every ``kerberos = {...}`` in it validated as
    the settings it claims to be, every tornado_kerb name it imports imported, and every
    Jupyter option it sets found on the provider."""
    import ast

    import tornado_kerb.jupyter as jupyter
    from tornado_kerb import KerberosSettings

    blocks = _python_blocks()
    assert len(blocks) >= 10
    traits = set(jupyter.KerberosIdentityProvider.class_trait_names())
    for where, code in blocks:
        flags = ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        tree = compile(code, where, "exec", flags=flags, dont_inherit=True)
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
                if names and names[0].lower() == "kerberos":
                    try:
                        settings = ast.literal_eval(node.value)
                    except ValueError:  # built from a fixture's values: run where shown
                        continue
                    KerberosSettings.from_mapping(settings)  # a typo raises, naming it
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tornado_kerb"):
                module = __import__(node.module or "", fromlist=["_"])
                for alias in node.names:
                    assert hasattr(module, alias.name), f"{where}: {node.module}.{alias.name}"
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute):
                owner = node.value
                if isinstance(owner.value, ast.Name) and owner.value.id == "c":
                    if owner.attr == "KerberosIdentityProvider":
                        assert node.attr in traits, f"{where}: no option {node.attr}"
