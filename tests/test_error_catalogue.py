"""Every error code the source can raise is in the catalogue (deploy/errors.py), and
every catalogue entry is raised somewhere.

The codes are found by reading the source with ast, not by importing it: a code
passed to one of the error constructors (first argument, or second after a status),
to a `code=`/`error_code=`/`*_code=` keyword or parameter default, as the code of
`finish(deployment, status, code, …)`, assigned to an `error_code` attribute, or set as
a class's default `code`. A name is resolved through the module-level string
constants; an f-string that starts with literal text ending in "-" is that family;
f"{prefix}-{…}" (the AWS mapper) gives one family per `prefix=` passed to it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from deploy import errors

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("portal", "workers", "deploy")
# Constructors whose first argument is the code, and those whose second is (after a status).
CODE_FIRST = {"SlipwayError", "DeployError", "UserError", "AppError", "ConsoleError", "Timeout", "Failed"}
CODE_SECOND = {"ApiError", "_Answer", "Stopped", "error_response"}
# Kinds that fix their code themselves (super().__init__("code", …), or a `code` parameter's default).
CODE_FIXED = {"RequestRefused", "Refused", "Unavailable", "Limited", "Malformed", "BadURL"}
CODE_KEYWORDS = {"error_code", "timeout_code", "failed_code"}


def _sources():
    for package in SCANNED:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" not in path.parts:
                yield str(path.relative_to(ROOT)), ast.parse(path.read_text(), filename=str(path))


def _name(node: ast.expr) -> str:
    return node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")


def _constants(tree: ast.Module) -> dict[str, str]:
    return {node.targets[0].id: node.value.value for node in tree.body
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)}


class Found:
    def __init__(self):
        self.codes: dict[str, list[str]] = {}  # code -> where it is raised
        self.families: dict[str, list[str]] = {}  # "golden-" -> where it is built
        self.prefixes: set[str] = set()  # prefix= values given to deploy.aws.call
        self.prefixed: list[str] = []  # where f"{prefix}-{…}" is built
        self.kinds: set[str] = set()  # every subclass of SlipwayError, at any depth

    def value(self, node: ast.expr, where: str, constants: dict[str, str]) -> None:
        if isinstance(node, ast.Name) and node.id in constants:
            node = ast.Constant(constants[node.id])
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value:
            self.codes.setdefault(node.value, []).append(where)
        elif isinstance(node, ast.JoinedStr) and node.values:
            first, rest = node.values[0], node.values[1:]
            if isinstance(first, ast.Constant) and str(first.value).endswith("-"):
                self.families.setdefault(first.value, []).append(where)
            elif (isinstance(first, ast.FormattedValue) and _name(first.value) == "prefix" and rest
                  and isinstance(rest[0], ast.Constant) and str(rest[0].value).startswith("-")):
                self.prefixed.append(where)


def collect() -> Found:
    found = Found()
    trees = list(_sources())
    everywhere: dict[str, str] = {}  # a module-level constant imported elsewhere (LAMBDA_NOT_OWNED)
    for _, tree in trees:
        everywhere.update(_constants(tree))
    bases = {node.name: {_name(base) for base in node.bases}
             for _, tree in trees for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}
    found.kinds = {"SlipwayError"}
    while grown := {name for name, of in bases.items() if of & found.kinds} - found.kinds:
        found.kinds |= grown
    for module, tree in trees:
        constants = {**everywhere, **_constants(tree)}
        for node in ast.walk(tree):
            where = f"{module}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.ClassDef) and node.name in CODE_FIXED:
                for inner in ast.walk(node):
                    if isinstance(inner, ast.Call) and _name(inner.func) == "__init__" and inner.args:
                        found.value(inner.args[0], f"{module}:{inner.lineno}", constants)
                    elif isinstance(inner, ast.arguments):
                        for argument, default in zip(inner.kwonlyargs, inner.kw_defaults, strict=True):
                            if argument.arg == "code" and default is not None:
                                found.value(default, where, constants)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                arguments = node.args.args + node.args.kwonlyargs
                defaults = ([None] * (len(node.args.args) - len(node.args.defaults)) + node.args.defaults
                            + node.args.kw_defaults)
                for argument, default in zip(arguments, defaults, strict=True):
                    if default is not None and argument.arg.endswith("_code"):
                        found.value(default, where, constants)
            elif isinstance(node, ast.Assign) and _name(node.targets[0]) == "error_code" \
                    and isinstance(node.targets[0], ast.Attribute):
                found.value(node.value, where, constants)  # a console run's answer.error_code
            elif isinstance(node, ast.Call):
                name = _name(node.func)
                if name in CODE_FIRST and node.args:
                    found.value(node.args[0], where, constants)
                if name in CODE_SECOND and len(node.args) > 1:
                    found.value(node.args[1], where, constants)
                if name == "finish" and isinstance(node.func, ast.Name) and len(node.args) > 2:
                    found.value(node.args[2], where, constants)  # recording.finish(deployment, status, code, …)
                for keyword in node.keywords:
                    if keyword.arg in CODE_KEYWORDS or (keyword.arg == "code" and name in found.kinds) \
                            or (keyword.arg == "error" and name == "_answer"):  # the GitLab receiver's body
                        found.value(keyword.value, where, constants)
                    if keyword.arg == "prefix" and name == "call":  # deploy.aws.call(…, prefix=…)
                        value = constants.get(keyword.value.id) if isinstance(keyword.value, ast.Name) else (
                            keyword.value.value if isinstance(keyword.value, ast.Constant) else None)
                        if isinstance(value, str):
                            found.prefixes.add(value)
    for prefix in found.prefixes:
        found.families.setdefault(f"{prefix}-", []).extend(found.prefixed)
    return found


@pytest.fixture(scope="module")
def found() -> Found:
    return collect()


def test_the_scan_reaches_the_codes_it_claims(found):
    # Its own count, independent of the catalogue: about 90 codes today, from every package.
    assert len(found.codes) >= 80, sorted(found.codes)
    assert {"lambda-", "ecr-", "s3-", "golden-", "lambda-update-failed-"} <= set(found.families), found.families
    for code, package in (("rate-limited", "portal/core/"), ("token-revoked", "portal/api/"),
                          ("architecture-mismatch", "deploy/"), ("git-timeout", "deploy/"),
                          ("process-failed", "deploy/"), ("worker-lost", "portal/deployments/"),
                          ("superseded", "portal/deployments/"), ("not-a-detector-answer", "portal/console/"),
                          ("refused", "portal/core/"), ("malformed", "portal/hooks/"), ("invalid", "portal/feedback/"),
                          ("lambda-not-owned", "portal/deployments/"), ("unauthorized", "portal/views/"),
                          ("upload-too-large", "portal/views/")):
        assert any(where.startswith(package) for where in found.codes.get(code, ())), (code, package)


def test_the_scan_knows_how_every_kind_of_error_takes_its_code(found):
    # A new subclass of SlipwayError must be taught to the scan, or its codes would go unseen.
    assert {"ApiError", "ConsoleError", "RequestRefused", "UserError", "Limited"} <= found.kinds
    assert not found.kinds - CODE_FIRST - CODE_SECOND - CODE_FIXED, found.kinds


def test_every_raised_code_is_in_the_catalogue(found):
    missing = {code: wheres for code, wheres in found.codes.items() if code not in errors.CATALOGUE}
    assert not missing, f"codes raised but not in deploy/errors.py's CATALOGUE: {missing}"


def test_every_built_family_is_in_the_catalogue(found):
    missing = {family: wheres for family, wheres in found.families.items() if family not in errors.FAMILIES}
    assert not missing, f"code families built but not in deploy/errors.py's FAMILIES: {missing}"


def test_every_catalogue_entry_is_raised_somewhere(found):
    assert errors.CATALOGUE and errors.FAMILIES
    assert not set(errors.CATALOGUE) - set(found.codes), "catalogued but never raised"
    assert not set(errors.FAMILIES) - set(found.families), "catalogued families never built"


def test_every_entry_says_what_it_means_and_whose_fault_it_is():
    entries = list(errors.CATALOGUE.values()) + list(errors.FAMILIES.values())
    assert len(entries) >= 60
    for entry in entries:
        assert entry.meaning and entry.fault in (errors.USER, errors.PLATFORM), entry
