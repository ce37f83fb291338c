"""Lambda: create or update by digest, wait, publish, verify, move the alias.

Every call goes through deploy.aws.call: one error mapper, one retry layer
(an "update in progress" conflict is retried there like throttling).
"""

from __future__ import annotations

import base64
import json
import re
import time
from dataclasses import dataclass

from deploy import aws
from deploy.errors import AppError, UserError

PREFIX = "lambda"
_MISSING = ("ResourceNotFoundException",)
# On every Lambda Slipway creates: the name of the function that owns it (workers/steps.check_owner).
OWNER_TAG = "slipway:function"

ENVIRONMENT_LIMIT = 4096  # bytes: Lambda's limit on all environment variables together


def environment_size(environment: dict) -> int:
    """The environment's size as Lambda measures it: the compact JSON text of the variables,
    in UTF-8 bytes, taking the larger of the two encodings it may use (non-ASCII kept, or
    escaped as \\uXXXX); quotes and backslashes count escaped."""
    return max(len(json.dumps(environment, separators=(",", ":"), ensure_ascii=escaped).encode())
               for escaped in (False, True))


@dataclass
class Settings:
    """What the function should look like in Lambda."""

    name: str
    architecture: str  # arm64 | x86_64
    memory_mb: int
    timeout_s: int
    environment: dict
    role_arn: str


def client():
    return aws.client("lambda")


def _call(doing: str, operation: str, **kwargs):
    return aws.call(doing, getattr(client(), operation), prefix=PREFIX, **kwargs)


def _read(doing: str, operation: str, **kwargs):
    """A read that may find nothing: None for ResourceNotFoundException."""
    return aws.call(doing, getattr(client(), operation), prefix=PREFIX, missing=_MISSING, **kwargs)


def get_configuration(name: str, qualifier: str = "") -> dict | None:
    """GetFunctionConfiguration of $LATEST, or of the version `qualifier`."""
    extra = {"Qualifier": qualifier} if qualifier else {}
    return _read(f"reading {name}{':' + qualifier if qualifier else ''}", "get_function_configuration",
                 FunctionName=name, **extra)


def create(settings: Settings, image_uri: str, description: str) -> dict:
    if not settings.role_arn:
        raise UserError("missing-role", "the first deploy creates the Lambda and needs an execution role ARN")
    created = _call(f"creating {settings.name}", "create_function",
                    FunctionName=settings.name, PackageType="Image", Code={"ImageUri": image_uri},
                    Role=settings.role_arn, Architectures=[settings.architecture], MemorySize=settings.memory_mb,
                    Timeout=settings.timeout_s, Environment={"Variables": settings.environment},
                    Description=description[:256])
    wait_active(settings.name)
    return created


def list_tags(arn: str) -> dict[str, str]:
    return _call(f"reading the tags of {arn}", "list_tags", Resource=arn).get("Tags") or {}


def tag(arn: str, tags: dict[str, str]) -> None:
    """A TagResource call of its own, not Tags on CreateFunction: the same call tags a Lambda
    created before Slipway tagged anything, and IAM (and the recorded calls) see it by name."""
    _call(f"tagging {arn}", "tag_resource", Resource=arn, Tags=tags)


def configuration_changes(current: dict, settings: Settings) -> dict:
    """The UpdateFunctionConfiguration arguments that differ from `current`."""
    changes = {}
    if current.get("MemorySize") != settings.memory_mb:
        changes["MemorySize"] = settings.memory_mb
    if current.get("Timeout") != settings.timeout_s:
        changes["Timeout"] = settings.timeout_s
    if (current.get("Environment") or {}).get("Variables", {}) != settings.environment:
        changes["Environment"] = {"Variables": settings.environment}
    return changes


def update_configuration(settings: Settings, changes: dict) -> None:
    _call(f"updating the configuration of {settings.name}", "update_function_configuration",
          FunctionName=settings.name, **changes)
    wait_updated(settings.name)


def update_code(settings: Settings, image_uri: str) -> dict:
    """Point $LATEST at the image digest, guarded by the RevisionId read just before
    each attempt (the update that made Lambda answer "conflict" changes it)."""

    def attempt(**kwargs):
        current = client().get_function_configuration(FunctionName=settings.name)
        if current.get("RevisionId"):
            kwargs["RevisionId"] = current["RevisionId"]
        return client().update_function_code(**kwargs)

    return aws.call(f"updating the code of {settings.name}", attempt, prefix=PREFIX, FunctionName=settings.name,
                    ImageUri=image_uri, Architectures=[settings.architecture])


# Lambda applies most image updates within a second or two: poll early, then back off
# to one request every 2 s (the SDK waiters start at 1-5 s between polls).
POLL_DELAYS = (0.1, 0.2, 0.3, 0.5, 1.0)
POLL_MAX_DELAY = 2.0
WAIT_TIMEOUT = 600


def _wait(name: str, field: str, done: str, pending: tuple[str, ...], doing: str) -> dict:
    """Poll GetFunction until `field` is `done`; returns the whole answer
    (Configuration and Code). A Failed state is a UserError with Lambda's reason."""
    deadline = time.monotonic() + WAIT_TIMEOUT
    for attempt in range(10_000):
        found = _call(f"waiting for {name}", "get_function", FunctionName=name)
        config = found["Configuration"]
        state = config.get(field)
        if state in (done, None):  # None: a plane that does not track this state has nothing in progress
            return found
        if state == "Failed":
            prefix = "LastUpdateStatus" if field == "LastUpdateStatus" else "State"
            code = config.get(f"{prefix}ReasonCode") or "Failed"
            reason = config.get(f"{prefix}Reason") or "no reason given"
            raise UserError(f"lambda-update-failed-{code}", f"Lambda could not apply the update: {reason}")
        if state not in pending or time.monotonic() > deadline:
            raise AppError("lambda-wait-failed", f"{name} did not finish {doing}: {field}={state}")
        time.sleep(POLL_DELAYS[attempt] if attempt < len(POLL_DELAYS) else POLL_MAX_DELAY)
    raise AppError("lambda-wait-failed", f"{name} did not finish {doing}")


def wait_active(name: str) -> dict:
    return _wait(name, "State", "Active", ("Pending",), "becoming active")


def wait_updated(name: str) -> dict:
    return _wait(name, "LastUpdateStatus", "Successful", ("InProgress",), "updating")


def holds_image(found: dict, image_uri: str) -> bool:
    """Does a GetFunction answer hold `image_uri`'s digest as its code?"""
    digest = image_uri.rsplit("@", 1)[-1]
    code = found.get("Code") or {}
    uris = [code.get("ImageUri", ""), code.get("ResolvedImageUri", "")]
    sha = (found.get("Configuration") or {}).get("CodeSha256", "")
    return any(uri.endswith(f"@{digest}") for uri in uris) or (bool(sha) and f"sha256:{sha}" == digest)


def publish(name: str, description: str, *, after: dict, image_uri: str) -> str:
    """Publish $LATEST as a version that can only hold `image_uri`.

    `after` is the GetFunction answer read when our update had been applied: it
    must show our image, and its RevisionId (and CodeSha256 where the API fills
    it) guard the publish, so a change slipped in since then fails the step
    with `revision-mismatch` instead of publishing someone else's code."""
    config = after.get("Configuration") or {}
    if not holds_image(after, image_uri):
        raise AppError("revision-mismatch", f"{name} no longer holds {image_uri} after the update: "
                       f"someone else changed its code meanwhile", retryable=False)
    kwargs = {"FunctionName": name, "Description": description[:256]}
    if config.get("RevisionId"):
        kwargs["RevisionId"] = config["RevisionId"]
    if config.get("CodeSha256"):
        kwargs["CodeSha256"] = config["CodeSha256"]
    return _call(f"publishing a version of {name}", "publish_version", **kwargs)["Version"]


@dataclass
class Invocation:
    error: str  # FunctionError, or ""
    result: object  # the decoded answer
    log_tail: str = ""  # the last 4 KB of the invoke's log, when asked for
    executed_version: str = ""


def invoke(name: str, qualifier: str, event: dict | bytes, *, tail: bool = False, timeout: float | None = None,
           attempts: int = aws.MAX_ATTEMPTS) -> Invocation:
    """Invoke synchronously (RequestResponse). `event` may be the JSON already encoded;
    `timeout`: the read timeout, for a function that may run longer than the default."""
    kwargs = {"LogType": "Tail"} if tail else {}
    made = aws.client("lambda", timeout=timeout) if timeout else client()
    payload = event if isinstance(event, bytes) else json.dumps(event).encode()
    response = aws.call(f"invoking {name}:{qualifier}", made.invoke, prefix=PREFIX, attempts=attempts,
                        FunctionName=name, Qualifier=qualifier, Payload=payload, **kwargs)
    raw = response["Payload"].read()
    try:
        result = json.loads(raw) if raw else None
    except ValueError:
        result = raw.decode(errors="replace")
    log_tail = ""
    if response.get("LogResult"):
        log_tail = base64.b64decode(response["LogResult"]).decode(errors="replace")
    return Invocation(response.get("FunctionError", ""), result, log_tail,
                      response.get("ExecutedVersion", ""))


@dataclass
class Report:
    """What one invoke cost, from its log tail. None: the platform did not measure it."""

    init_ms: float | None = None
    duration_ms: float | None = None
    memory_used_mb: int | None = None
    billed_ms: float | None = None


_REPORT = re.compile(r"^REPORT RequestId:.*$", re.MULTILINE)
_EMULATOR_INIT = re.compile(r"INIT REPORT\(durationMs:\s*([0-9.]+)")
# The emulator's runtime-done line: the invoke's own duration (init not folded in).
_EMULATOR_DONE = re.compile(r"\(rapid\) INVOKE RTDONE\(.*?duration:\s*([0-9.]+)ms")


def _field(line: str, name: str) -> float | None:
    found = re.search(rf"(?:^|\t|\s\s){name}:\s*([0-9.]+)\s*(ms|MB)", line)
    return float(found.group(1)) if found else None


def parse_report(log_tail: str) -> Report:
    """Read AWS's `REPORT` line, or the local emulator's form of it.

    AWS: `REPORT RequestId: … Duration: 12.3 ms … Max Memory Used: 70 MB Init Duration: 150.1 ms`.
    The emulator (its lines say `(rapid)`) folds init into Duration, shows a
    token Init Duration and reports the memory size as used: its real init is
    in `INIT REPORT(durationMs: …)` (absent when warm), and its memory is not
    measured (None, never a made-up figure)."""
    lines = _REPORT.findall(log_tail or "")
    if not lines:
        # The plane reads the emulator's log as the answer returns, so its tail may end
        # before the REPORT line: the runtime's RTDONE line has the invoke's duration.
        done = _EMULATOR_DONE.search(log_tail or "")
        if done is None:
            return Report()
        emulated = _EMULATOR_INIT.search(log_tail)
        return Report(init_ms=float(emulated.group(1)) if emulated else None, duration_ms=float(done.group(1)))
    line = lines[-1]
    duration, init = _field(line, "Duration"), _field(line, "Init Duration")
    memory, billed = _field(line, "Max Memory Used"), _field(line, "Billed Duration")
    if "(rapid)" in log_tail:  # the emulator's own log lines: its figures need reading differently
        emulated = _EMULATOR_INIT.search(log_tail)
        init = float(emulated.group(1)) if emulated else None  # warm: no init at all
        if init is not None and duration is not None:
            duration = max(duration - init, 0.0)
        memory = billed = None  # nothing is billed locally; its figure is the folded Duration rounded up
    return Report(init_ms=init, duration_ms=duration, memory_used_mb=int(memory) if memory is not None else None,
                  billed_ms=billed)


def get_alias(name: str, alias: str) -> dict | None:
    return _read(f"reading alias {alias} of {name}", "get_alias", FunctionName=name, Name=alias)


def alias_version(name: str, alias: str) -> str | None:
    found = get_alias(name, alias)
    return found["FunctionVersion"] if found else None


def alias_digest(name: str, alias: str) -> tuple[str | None, str]:
    """(the version `alias` serves, the image digest that version runs): GetAlias, then
    GetFunction of that version. (None, "") when the function or the alias does not exist."""
    pointed = get_alias(name, alias)
    if pointed is None:
        return None, ""
    version = pointed["FunctionVersion"]
    found = _read(f"reading version {version} of {name}", "get_function", FunctionName=name, Qualifier=version)
    return version, image_digest(found) if found else ""


# How often an alias move re-reads the alias and tries again after PreconditionFailed (a
# rollout's tick or abort moved it between our read and our write).
ALIAS_ATTEMPTS = 5


def routing(found: dict | None) -> dict[str, float]:
    """A GetAlias answer's extra versions and their weights ({}: the primary serves everything)."""
    return dict(((found or {}).get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {})


def write_alias(name: str, alias: str, primary: str, weights: dict[str, float], *, revision: str) -> dict:
    """One UpdateAlias: `primary` and the routing, always sent (an UpdateAlias without
    RoutingConfig keeps the old weights; {} clears them), guarded by the RevisionId read
    before. PreconditionFailed is `revision-mismatch`, never retried here: the caller re-reads."""
    guard = {"RevisionId": revision} if revision else {}
    return _call(f"moving alias {alias} of {name}", "update_alias", FunctionName=name, Name=alias,
                 FunctionVersion=primary, RoutingConfig={"AdditionalVersionWeights": dict(weights)}, **guard)


def point_alias(name: str, alias: str, version: str, *, attempts: int = ALIAS_ATTEMPTS) -> str | None:
    """Move (or create) `alias` to `version` with its routing cleared, guarded by the alias's
    RevisionId; after PreconditionFailed (someone moved it meanwhile) read it again and retry,
    up to `attempts` times. Returns the version it pointed at before."""
    for attempt in range(1, attempts + 1):
        before = get_alias(name, alias)
        if before is None:
            _call(f"creating alias {alias}", "create_alias", FunctionName=name, Name=alias, FunctionVersion=version)
            return None
        try:
            write_alias(name, alias, version, {}, revision=before.get("RevisionId", ""))
        except AppError as exc:
            if exc.code != "revision-mismatch" or attempt == attempts:
                raise
            continue
        return before["FunctionVersion"]
    raise AssertionError("unreachable")


def version_exists(name: str, version: str) -> bool:
    return _read(f"reading version {version} of {name}", "get_function_configuration",
                 FunctionName=name, Qualifier=version) is not None


# --- Retention: what a function holds, and deleting a published version ------------------


def _pages(doing: str, operation: str, key: str, **kwargs) -> list[dict]:
    """Every item of a Marker-paginated listing, each page through the one retry layer."""
    items, marker = [], None
    while True:
        page = _call(doing, operation, **kwargs, **({"Marker": marker} if marker else {}))
        items.extend(page.get(key) or [])
        marker = page.get("NextMarker")
        if not marker:
            return items


def list_versions(name: str) -> list[dict]:
    """Every version of the function, $LATEST included (ListVersionsByFunction)."""
    return _pages(f"listing the versions of {name}", "list_versions_by_function", "Versions", FunctionName=name)


def list_aliases(name: str) -> list[dict]:
    return _pages(f"listing the aliases of {name}", "list_aliases", "Aliases", FunctionName=name)


def aliased_versions(aliases: list[dict]) -> dict[str, list[str]]:
    """version -> the aliases that send it traffic (its main version or a weighted extra one)."""
    held: dict[str, list[str]] = {}
    for alias in aliases:
        weights = (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
        for version in {alias.get("FunctionVersion"), *weights}:
            if version:
                held.setdefault(version, []).append(alias["Name"])
    return held


def version_image(name: str, version: str) -> str:
    """The image a version runs (repository@sha256:…), "" when Lambda does not say."""
    found = _call(f"reading version {version} of {name}", "get_function", FunctionName=name, Qualifier=version)
    code = found.get("Code") or {}
    return code.get("ResolvedImageUri") or code.get("ImageUri") or ""


def delete_version(name: str, version: str) -> bool:
    """Delete one published version (never $LATEST, never the function); False if it was gone already.
    Lambda refuses a version an alias points at (ResourceConflictException is then not retried
    forever: it is the bounded retry of "update in progress", then an AppError)."""
    if not version.isdigit():
        raise ValueError(f"{version!r} is not a published version number")
    deleted = aws.call(f"deleting version {version} of {name}", client().delete_function, prefix=PREFIX,
                       missing=_MISSING, FunctionName=name, Qualifier=version)
    return deleted is not None


def image_digest(found: dict) -> str:
    """The image digest a GetFunction answer holds (repo@sha256:… in its code, or CodeSha256)."""
    code = found.get("Code") or {}
    for uri in (code.get("ResolvedImageUri", ""), code.get("ImageUri", "")):
        if "@sha256:" in uri:
            return uri.rsplit("@", 1)[1]
    sha = (found.get("Configuration") or {}).get("CodeSha256", "")
    return f"sha256:{sha}" if sha else ""


def observed_state(name: str, alias: str) -> dict | None:
    """What Lambda reports for the function, in the shape Slipway keeps as its expected
    state: the alias's version, and $LATEST's image, memory, timeout, environment and
    architecture ($LATEST is what the next version is published from). None: no such function."""
    found = _read(f"reading {name}", "get_function", FunctionName=name)
    if found is None:
        return None
    config = found.get("Configuration") or {}
    pointed = get_alias(name, alias)
    return {
        "alias_version": pointed["FunctionVersion"] if pointed else None,
        "alias_routing": routing(pointed),
        "image_digest": image_digest(found),
        "memory_mb": config.get("MemorySize"),
        "timeout_s": config.get("Timeout"),
        "environment": dict((config.get("Environment") or {}).get("Variables") or {}),
        "architecture": (config.get("Architectures") or ["x86_64"])[0],
    }


# --- Function URLs on an alias (previews) ---------------------------------------------

URL_AUTH_TYPES = ("AWS_IAM", "NONE")  # AWS_IAM: signed callers only; NONE: anyone with the URL


def url_statements(alias: str) -> tuple[str, str]:
    """The ids of the two statements a NONE-auth URL on `alias` needs: since October 2025 Lambda
    wants lambda:InvokeFunctionUrl (FunctionUrlAuthType=NONE) AND lambda:InvokeFunction
    (lambda:InvokedViaFunctionUrl=true) for a public URL (docs: "Control access to Lambda function URLs")."""
    return f"slipway-{alias}-url", f"slipway-{alias}-invoke"


def url_id(function_url: str) -> str:
    """The URL's id, the first label of its host (https://<id>.lambda-url.<region>.on.aws/)."""
    return function_url.split("://", 1)[-1].split(".", 1)[0]


def _statement_ids(name: str, alias: str) -> set[str]:
    """The ids of the statements on `alias`'s own resource policy (GetPolicy with the qualifier)."""
    found = _read(f"reading the policy of {name}:{alias}", "get_policy", FunctionName=name, Qualifier=alias)
    statements = json.loads(found["Policy"]).get("Statement", []) if found and found.get("Policy") else []
    return {statement.get("Sid", "") for statement in statements}


def ensure_url(name: str, alias: str, auth_type: str) -> str:
    """Give `alias` a function URL with `auth_type`; returns the URL. NONE adds the two public
    statements on the alias (only those missing: AddPermission refuses a statement id twice);
    AWS_IAM removes them, so a URL made private stops being public."""
    if auth_type not in URL_AUTH_TYPES:
        raise UserError("bad-url-auth", f"{auth_type!r} is not a function URL auth type ({', '.join(URL_AUTH_TYPES)})")
    config = _read(f"reading the URL of {name}:{alias}", "get_function_url_config", FunctionName=name,
                   Qualifier=alias)
    if config is None:
        config = _call(f"creating a URL for {name}:{alias}", "create_function_url_config", FunctionName=name,
                       Qualifier=alias, AuthType=auth_type)
    elif config.get("AuthType") != auth_type:
        config = _call(f"changing the URL auth of {name}:{alias}", "update_function_url_config", FunctionName=name,
                       Qualifier=alias, AuthType=auth_type)
    present = _statement_ids(name, alias)
    url_sid, invoke_sid = url_statements(alias)
    if auth_type == "NONE":
        if url_sid not in present:
            _call(f"allowing public calls to the URL of {name}:{alias}", "add_permission", FunctionName=name,
                  Qualifier=alias, StatementId=url_sid, Action="lambda:InvokeFunctionUrl", Principal="*",
                  FunctionUrlAuthType="NONE")
        if invoke_sid not in present:
            _call(f"allowing invokes through the URL of {name}:{alias}", "add_permission", FunctionName=name,
                  Qualifier=alias, StatementId=invoke_sid, Action="lambda:InvokeFunction", Principal="*",
                  InvokedViaFunctionUrl=True)
    else:
        for sid in present & {url_sid, invoke_sid}:
            _read(f"removing statement {sid} of {name}:{alias}", "remove_permission", FunctionName=name,
                  Qualifier=alias, StatementId=sid)
    return config["FunctionUrl"]


def remove_alias(name: str, alias: str) -> list[str]:
    """Remove `alias` with its URL and statements, in the order DeleteFunctionUrlConfig,
    RemovePermission (each statement), DeleteAlias: the URL stops answering first, and
    nothing is left pointing at an alias that is gone. Only ResourceNotFoundException is
    tolerated (the clean-up ran before, or the URL was never made); returns what was removed."""
    removed = []
    if _read(f"deleting the URL of {name}:{alias}", "delete_function_url_config", FunctionName=name,
             Qualifier=alias) is not None:
        removed.append("url")
    for sid in url_statements(alias):
        if _read(f"removing statement {sid} of {name}:{alias}", "remove_permission", FunctionName=name,
                 Qualifier=alias, StatementId=sid) is not None:
            removed.append(sid)
    if _read(f"deleting alias {alias} of {name}", "delete_alias", FunctionName=name, Name=alias) is not None:
        removed.append("alias")
    return removed


def list_urls(name: str) -> list[dict]:
    """Every function URL of the function, on $LATEST or an alias (ListFunctionUrlConfigs)."""
    return _pages(f"listing the URLs of {name}", "list_function_url_configs", "FunctionUrlConfigs",
                  FunctionName=name)
