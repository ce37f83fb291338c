"""A Lambda alias as the engine's unit tests need it: GetAlias, UpdateAlias checking the
RevisionId (as AWS does), and each version's configuration, behind the one AWS seam."""

from __future__ import annotations

import contextlib
from unittest import mock

from botocore.exceptions import ClientError

ROLE = "arn:aws:iam::000000000000:role/slipway-fn"


class Plane:
    def __init__(self, primary: str = "1"):
        self.primary, self.weights, self.revision = primary, {}, 1
        self.writes: list[tuple[str, dict]] = []  # every UpdateAlias that took: (primary, weights)
        self.roles: dict[str, str] = {}  # version -> role, when not ROLE
        self.fail_next_write = ""  # an AWS error code the next UpdateAlias answers

    def get_alias(self, FunctionName, Name):  # noqa: N803 - boto3's names
        found = {"FunctionVersion": self.primary, "RevisionId": f"r{self.revision}", "Name": Name}
        if self.weights:
            found["RoutingConfig"] = {"AdditionalVersionWeights": dict(self.weights)}
        return found

    def update_alias(self, FunctionName, Name, FunctionVersion, RoutingConfig=None, RevisionId=None):  # noqa: N803
        if self.fail_next_write:
            code, self.fail_next_write = self.fail_next_write, ""
            raise ClientError({"Error": {"Code": code, "Message": "injected"}}, "UpdateAlias")
        if RevisionId is not None and RevisionId != f"r{self.revision}":
            raise ClientError({"Error": {"Code": "PreconditionFailedException", "Message": "stale"}}, "UpdateAlias")
        self.primary = FunctionVersion
        if RoutingConfig is not None:
            self.weights = dict(RoutingConfig["AdditionalVersionWeights"])
        self.revision += 1
        self.writes.append((self.primary, dict(self.weights)))
        return self.get_alias(FunctionName, Name)

    def move(self, primary: str, weights: dict) -> None:
        """Someone else (a tick that died, an operator) changes the alias."""
        self.primary, self.weights, self.revision = primary, dict(weights), self.revision + 1

    def get_function_configuration(self, FunctionName, Qualifier=None):  # noqa: N803
        return {"FunctionName": FunctionName, "Version": Qualifier or "$LATEST",
                "Role": self.roles.get(Qualifier, ROLE)}

    def get_function(self, FunctionName, Qualifier=None):  # noqa: N803
        return {"Configuration": {**self.get_function_configuration(FunctionName, Qualifier), "MemorySize": 256,
                                  "Timeout": 30, "Architectures": ["x86_64"]},
                "Code": {"ImageUri": "1.dkr.ecr.us-east-1.amazonaws.com/team/hello@sha256:" + "b" * 64}}

    @contextlib.contextmanager
    def serving(self):
        with mock.patch("deploy.aws.client", autospec=True) as client:
            lam = client.return_value
            lam.get_alias.side_effect = self.get_alias
            lam.update_alias.side_effect = self.update_alias
            lam.get_function_configuration.side_effect = self.get_function_configuration
            lam.get_function.side_effect = self.get_function
            yield lam
