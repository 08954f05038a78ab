"""Keras's own `keras.distillation` tests, run against kdkeras.

Keras ships the tests of its distillation API inside the wheel
(`keras/src/distillation/distiller_test.py` and `distillation_loss_test.py`).
This file copies them from the installed Keras with only their imports
switched to kdkeras (`from keras.src.distillation.distiller import
Distiller` becomes `from kdkeras import Distiller`, and so on), runs them
with pytest in a fresh process, and reports each Keras test here as a test
of its own. Every Keras release thereby re-checks that kdkeras is a drop-in
for `keras.distillation`.

A Keras test that checks something kdkeras deliberately does differently is
listed in `EXPECTED_DIFFERENCES` with the reason and the failure it must
show; it is marked `xfail(strict=True)`, so it fails loudly when it starts
passing or fails for another reason. With a Keras that ships no such files,
the tests are skipped with that reason.
"""

import ast
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

import keras
import pytest
from _worker_env import worker_env  # noqa: E402

KERAS_TEST_DIR = os.path.join(os.path.dirname(keras.__file__), "src", "distillation")
KERAS_TEST_FILES = ("distiller_test.py", "distillation_loss_test.py")
# Imports from these modules are switched to `kdkeras` (public names only:
# private helpers, if a Keras test ever imports one, stay Keras's).
KERAS_MODULES = ("keras.distillation", "keras.src.distillation")

# "file::Class::test" -> (reason, regular expression the failure must match).
EXPECTED_DIFFERENCES = {
    "distillation_loss_test.py::TestEndToEndDistillation::test_feature_distillation_end_to_end": (
        "inspects keras.distillation's private feature-extractor models "
        "(`_teacher_feature_extractor`, `_student_feature_extractor`); kdkeras "
        "has none: it taps the layers during the models' single forward pass, "
        "so the student runs once per step (twice in keras.distillation) and "
        "subclassed models work too",
        r"_(teacher|student)_feature_extractor",
    ),
    "distillation_loss_test.py::TestEndToEndDistillation::"
    "test_multi_distillation_loss_distillation_end_to_end": (
        "inspects keras.distillation's private feature-extractor models, as "
        "test_feature_distillation_end_to_end",
        r"_(teacher|student)_feature_extractor",
    ),
}


def _is_keras_distillation(module):
    return any(module == m or module.startswith(m + ".") for m in KERAS_MODULES)


def _import_line(module, aliases):
    names = ", ".join(a.name if a.asname is None else f"{a.name} as {a.asname}" for a in aliases)
    return f"from {module} import {names}"


def switch_imports(source, filename="<keras test>"):
    """`source` with its `keras.distillation` imports taken from kdkeras.

    Each `from keras[.src].distillation[...] import Name` becomes `from
    kdkeras import Name`, on the same line, so line numbers in tracebacks
    match the Keras file. Raises `ValueError` for any other reference to
    those modules (a form this rewrite does not know), rather than running
    Keras's own classes under kdkeras's name.
    """
    tree = ast.parse(source, filename)
    lines = source.splitlines(keepends=True)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bad = [a.name for a in node.names if _is_keras_distillation(a.name)]
            if bad:
                raise ValueError(f"{filename}:{node.lineno}: cannot switch `import {bad[0]}`")
            continue
        if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
            continue
        if node.module in ("keras", "keras.src") and any(
            a.name == "distillation" for a in node.names
        ):
            raise ValueError(f"{filename}:{node.lineno}: cannot switch this import")
        if not _is_keras_distillation(node.module):
            continue
        first, last = node.lineno - 1, node.end_lineno - 1
        before = lines[first][: node.col_offset]
        after = lines[last][node.end_col_offset :]
        if before.strip() or (after.strip() and not after.strip().startswith("#")):
            raise ValueError(f"{filename}:{node.lineno}: cannot switch an import sharing its line")
        public = [a for a in node.names if not a.name.startswith("_")]
        private = [a for a in node.names if a.name.startswith("_")]
        statements = []
        if public:
            statements.append(_import_line("kdkeras", public))
        if private:
            statements.append(_import_line(node.module, private))
        lines[first] = before + "; ".join(statements) + "\n"
        for i in range(first + 1, last + 1):
            lines[i] = "\n"
    switched = "".join(lines)
    leftover = [
        n.lineno
        for n in ast.walk(ast.parse(switched, filename))
        if isinstance(n, ast.Attribute) and _is_keras_distillation(ast.unparse(n))
    ]
    if leftover:
        raise ValueError(
            f"{filename}:{leftover[0]}: cannot switch a reference to keras.distillation"
        )
    return switched


def _keras_test_ids(source, filename):
    """`file::Class::test` (or `file::test`) for each test in a Keras file."""
    ids = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
            ids.append(f"{filename}::{node.name}")
        elif isinstance(node, ast.ClassDef):
            ids.extend(
                f"{filename}::{node.name}::{item.name}"
                for item in node.body
                if isinstance(item, ast.FunctionDef) and item.name.startswith("test")
            )
    return ids


def _collect():
    sources, ids = {}, []
    for filename in KERAS_TEST_FILES:
        path = os.path.join(KERAS_TEST_DIR, filename)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                sources[filename] = f.read()
            ids.extend(_keras_test_ids(sources[filename], filename))
    return sources, ids


KERAS_SOURCES, KERAS_TEST_IDS = _collect()
NO_KERAS_TESTS = (
    f"Keras {keras.__version__} ships no distillation tests "
    f"({', '.join(KERAS_TEST_FILES)} in {KERAS_TEST_DIR})"
)


class ExpectedDifference(AssertionError):
    """A Keras test failed in the way `EXPECTED_DIFFERENCES` says it must."""


def _params():
    if not KERAS_TEST_IDS:
        return [pytest.param("none", marks=pytest.mark.skip(reason=NO_KERAS_TESTS), id="none")]
    params = []
    for test_id in KERAS_TEST_IDS:
        marks = ()
        if test_id in EXPECTED_DIFFERENCES:
            reason = EXPECTED_DIFFERENCES[test_id][0]
            marks = pytest.mark.xfail(strict=True, raises=ExpectedDifference, reason=reason)
        params.append(pytest.param(test_id, marks=marks, id=test_id))
    return params


def _outcome(case):
    for tag, outcome in (("failure", "failed"), ("error", "failed"), ("skipped", "skipped")):
        element = case.find(tag)
        if element is not None:
            text = (element.get("message") or "") + "\n" + (element.text or "")
            return outcome, text.strip()
    return "passed", ""


@pytest.fixture(scope="module")
def keras_results(tmp_path_factory):
    """Runs the switched Keras tests once; `{test id: (outcome, message)}`."""
    folder = tmp_path_factory.mktemp("keras_distillation_tests")
    for filename, source in KERAS_SOURCES.items():
        switched = switch_imports(source, filename)
        (folder / filename).write_text(switched, encoding="utf-8")
    # Keras's own marks (requires_trainable_backend) are unknown here; the
    # TensorFlow backend trains, so they select nothing away.
    (folder / "pytest.ini").write_text(
        "[pytest]\nfilterwarnings =\n    ignore::pytest.PytestUnknownMarkWarning\n"
        "    ignore::DeprecationWarning\n"
    )
    report = folder / "report.xml"
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "--tb=short",
        "-p",
        "no:cacheprovider",
        "-c",
        str(folder / "pytest.ini"),
        "--rootdir",
        str(folder),
        f"--junitxml={report}",
        *KERAS_SOURCES,
    ]
    env = worker_env()
    env.pop("PYTEST_ADDOPTS", None)  # this run's options are not Keras's
    process = subprocess.run(
        command, cwd=folder, env=env, capture_output=True, text=True, timeout=900
    )
    tail = (process.stdout + process.stderr)[-3000:]
    if not report.exists():
        pytest.fail(f"pytest wrote no report (exit {process.returncode}):\n{tail}")
    known = set(KERAS_TEST_IDS)
    results = {}
    for case in ElementTree.parse(report).iter("testcase"):
        module, _, cls = case.get("classname", "").partition(".")
        base = f"{module}.py::{cls}::" if cls else f"{module}.py::"
        name = case.get("name", "")
        # absl parameterized tests get suffixed names: map them to their
        # method (the longest one that prefixes the name).
        matches = [i for i in known if i.startswith(base) and name.startswith(i[len(base) :])]
        test_id = max(matches, key=len) if matches else base + name
        previous = results.get(test_id)
        outcome = _outcome(case)
        if previous is None or previous[0] == "passed":
            results[test_id] = outcome
    results["<output>"] = ("", tail)
    return results


@pytest.mark.parametrize("test_id", _params())
def test_keras_distillation_test_passes_against_kdkeras(test_id, keras_results):
    if test_id not in keras_results:
        pytest.fail(f"{test_id} was not run; pytest said:\n{keras_results['<output>'][1]}")
    outcome, message = keras_results[test_id]
    if outcome == "skipped":
        pytest.skip(f"skipped by Keras's test itself: {message}")
    if outcome == "passed":
        return
    if test_id in EXPECTED_DIFFERENCES:
        pattern = EXPECTED_DIFFERENCES[test_id][1]
        if re.search(pattern, message):
            raise ExpectedDifference(message[-2000:])
        pytest.fail(
            f"{test_id} is listed as an expected difference (failing on "
            f"{pattern!r}) but failed otherwise:\n{message[-4000:]}"
        )
    pytest.fail(message[-4000:])


def test_expected_differences_name_keras_tests_and_are_in_the_readme():
    readme_path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "README.md")
    with open(readme_path, encoding="utf-8") as f:
        readme = f.read()
    missing = [i for i in EXPECTED_DIFFERENCES if i.rpartition("::")[2] not in readme]
    assert not missing, f"README.md does not list these expected differences: {missing}"
    if not KERAS_TEST_IDS:
        pytest.skip(NO_KERAS_TESTS)
    stale = sorted(set(EXPECTED_DIFFERENCES) - set(KERAS_TEST_IDS))
    assert not stale, f"not tests of Keras {keras.__version__}: {stale}"


def test_switch_imports_keeps_lines_and_keeps_private_names():
    source = (
        "import keras\n"
        "from keras.src.distillation.distiller import Distiller\n"
        "from keras.src.distillation.distillation_loss import (\n"
        "    LogitsDistillation as LD,\n"
        "    _convert_loss_to_function,\n"
        ")\n"
        "x = 1\n"
    )
    switched = switch_imports(source)
    assert switched.splitlines() == [
        "import keras",
        "from kdkeras import Distiller",
        "from kdkeras import LogitsDistillation as LD; "
        "from keras.src.distillation.distillation_loss import _convert_loss_to_function",
        "",
        "",
        "",
        "x = 1",
    ]
    with pytest.raises(ValueError, match="cannot switch"):
        switch_imports("import keras\nd = keras.distillation.Distiller\n")
    with pytest.raises(ValueError, match="cannot switch"):
        switch_imports("from keras import distillation\n")
