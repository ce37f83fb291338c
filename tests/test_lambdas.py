"""Lambda calls at the boto3 seam (deploy.aws.client is the only thing patched):
updates carry the RevisionId read just before, and a version can only hold
its own deployment's code."""

from unittest import mock

import pytest
from botocore.exceptions import ClientError

from deploy import lambdas
from deploy.errors import AppError

IMAGE = "127.0.0.1:4599/fx@sha256:" + "a" * 64
OTHER = "127.0.0.1:4599/fx@sha256:" + "b" * 64


def _error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": f"test {code}"}}, "UpdateFunctionCode")


@pytest.fixture
def lam():
    with mock.patch("deploy.aws.client", autospec=True) as client, \
            mock.patch("deploy.aws.time.sleep", autospec=True):
        yield client.return_value


def test_update_code_retries_a_conflict_with_the_revision_read_just_before(lam):
    lam.get_function_configuration.side_effect = [{"RevisionId": "rev-1"}, {"RevisionId": "rev-2"}]
    lam.update_function_code.side_effect = [_error("ResourceConflictException"), {"RevisionId": "rev-3"}]
    settings = lambdas.Settings(name="fx", architecture="arm64", memory_mb=256, timeout_s=30, environment={},
                                role_arn="")
    assert lambdas.update_code(settings, IMAGE) == {"RevisionId": "rev-3"}
    assert [c.kwargs for c in lam.update_function_code.call_args_list] == [
        {"FunctionName": "fx", "ImageUri": IMAGE, "Architectures": ["arm64"], "RevisionId": revision}
        for revision in ("rev-1", "rev-2")]


def test_publish_is_guarded_by_the_revision_the_wait_saw(lam):
    lam.publish_version.return_value = {"Version": "7"}
    after = {"Configuration": {"RevisionId": "rev-9", "CodeSha256": "a" * 64}, "Code": {"ImageUri": IMAGE}}
    assert lambdas.publish("fx", "abc", after=after, image_uri=IMAGE) == "7"
    assert lam.publish_version.call_args.kwargs == {"FunctionName": "fx", "Description": "abc",
                                                    "RevisionId": "rev-9", "CodeSha256": "a" * 64}


def test_publish_refuses_when_the_function_no_longer_holds_our_image(lam):
    after = {"Configuration": {"RevisionId": "rev-9"}, "Code": {"ImageUri": OTHER}}
    with pytest.raises(AppError, match="someone else changed its code") as refused:
        lambdas.publish("fx", "abc", after=after, image_uri=IMAGE)
    assert (refused.value.code, refused.value.retryable) == ("revision-mismatch", False)
    lam.publish_version.assert_not_called()


def test_a_revision_changed_before_the_publish_fails_it_once(lam):
    lam.publish_version.side_effect = _error("PreconditionFailedException")
    after = {"Configuration": {"RevisionId": "rev-9"}, "Code": {"ImageUri": IMAGE}}
    with pytest.raises(AppError) as refused:
        lambdas.publish("fx", "abc", after=after, image_uri=IMAGE)
    assert refused.value.code == "revision-mismatch"
    assert lam.publish_version.call_count == 1


def test_the_alias_moves_guarded_by_its_own_revision(lam):
    lam.get_alias.return_value = {"FunctionVersion": "3", "RevisionId": "alias-rev"}
    assert lambdas.point_alias("fx", "live", "4") == "3"
    assert lam.update_alias.call_args.kwargs == {"FunctionName": "fx", "Name": "live", "FunctionVersion": "4",
                                                 "RoutingConfig": {"AdditionalVersionWeights": {}},
                                                 "RevisionId": "alias-rev"}


def test_an_alias_move_clears_the_weights_a_rollout_left(lam):
    lam.get_alias.return_value = {"FunctionVersion": "3", "RevisionId": "r1",
                                  "RoutingConfig": {"AdditionalVersionWeights": {"4": 0.1}}}
    lambdas.point_alias("fx", "live", "3")
    assert lam.update_alias.call_args.kwargs["RoutingConfig"] == {"AdditionalVersionWeights": {}}


def test_an_alias_move_that_meets_precondition_failed_reads_the_alias_again_and_retries(lam):
    lam.get_alias.side_effect = [{"FunctionVersion": "3", "RevisionId": "r1"},
                                 {"FunctionVersion": "3", "RevisionId": "r2",
                                  "RoutingConfig": {"AdditionalVersionWeights": {"4": 0.2}}}]
    lam.update_alias.side_effect = [_error("PreconditionFailedException"), {}]
    assert lambdas.point_alias("fx", "live", "3") == "3"
    revisions = [call.kwargs["RevisionId"] for call in lam.update_alias.call_args_list]
    assert revisions == ["r1", "r2"]


def test_an_alias_move_gives_up_after_its_attempts(lam):
    lam.get_alias.return_value = {"FunctionVersion": "3", "RevisionId": "r1"}
    lam.update_alias.side_effect = _error("PreconditionFailedException")
    with pytest.raises(AppError) as caught:
        lambdas.point_alias("fx", "live", "4", attempts=2)
    assert caught.value.code == "revision-mismatch" and lam.update_alias.call_count == 2


def test_a_weighted_write_sends_the_primary_the_weights_and_the_revision(lam):
    lambdas.write_alias("fx", "live", "3", {"4": 0.1}, revision="r7")
    assert lam.update_alias.call_args.kwargs == {"FunctionName": "fx", "Name": "live", "FunctionVersion": "3",
                                                 "RoutingConfig": {"AdditionalVersionWeights": {"4": 0.1}},
                                                 "RevisionId": "r7"}
    assert lambdas.routing({"RoutingConfig": {"AdditionalVersionWeights": {"4": 0.1}}}) == {"4": 0.1}
    assert lambdas.routing({"FunctionVersion": "3"}) == {}


AWS_TAIL = ("START RequestId: 8f5 Version: 3\nEND RequestId: 8f5\n"
            "REPORT RequestId: 8f5\tDuration: 12.34 ms\tBilled Duration: 13 ms\tMemory Size: 1024 MB\t"
            "Max Memory Used: 170 MB\tInit Duration: 350.12 ms\t\n")
# As the local plane's emulator writes it (seen in the test stack), cold and then warm.
EMULATOR_TAIL = ("START RequestId: 1d2 Version: 1\n29 Nov 2026 03:47:25,195 [INFO] (rapid) INIT REPORT(durationMs: "
                 "1210.500000)\nEND RequestId: 1d2\nREPORT RequestId: 1d2\tInit Duration: 0.05 ms\tDuration: "
                 "1254.72 ms\tBilled Duration: 1255 ms\tMemory Size: 1024 MB\tMax Memory Used: 1024 MB\t\n")
EMULATOR_WARM_TAIL = ("START RequestId: 1d3 Version: 1\nEND RequestId: 1d3\nREPORT RequestId: 1d3\tInit Duration: "
                      "0.05 ms\tDuration: 1.10 ms\tBilled Duration: 2 ms\tMemory Size: 1024 MB\tMax Memory Used: "
                      "1024 MB\t\n29 Nov 2026 03:47:26,001 [INFO] (rapid) INVOKE RTDONE(status: success)")


def test_the_report_line_of_aws_gives_init_duration_billed_and_memory():
    assert lambdas.parse_report(AWS_TAIL) == lambdas.Report(init_ms=350.12, duration_ms=12.34, memory_used_mb=170,
                                                             billed_ms=13)


def test_the_emulators_report_takes_init_from_its_own_line_and_does_not_invent_memory():
    report = lambdas.parse_report(EMULATOR_TAIL)
    assert report.init_ms == 1210.5 and report.memory_used_mb is None and report.billed_ms is None
    assert round(report.duration_ms, 2) == 44.22  # its Duration folds the init in


def test_a_warm_emulator_invoke_has_no_init_and_no_memory_figure():
    assert lambdas.parse_report(EMULATOR_WARM_TAIL) == lambdas.Report(init_ms=None, duration_ms=1.1,
                                                                       memory_used_mb=None)


def test_a_tail_without_a_report_line_measures_nothing():
    assert lambdas.parse_report("some output\n") == lambdas.Report()


# The plane reads the emulator's log as the answer returns: now and then its tail ends
# before the REPORT line, at the runtime's own RTDONE line (seen in the test stack).
EMULATOR_EARLY_TAIL = ("START RequestId: 0394 Version: 1\n02 Dec 2026 17:14:02,828 [INFO] (rapid) INVOKE "
                       "START(requestId: 0394)\n02 Dec 2026 17:14:02,829 [INFO] (rapid) INVOKE RTDONE(status: "
                       "success, produced bytes: 0, duration: 0.867000ms)\n")


def test_an_emulator_tail_cut_before_its_report_takes_the_duration_from_rtdone():
    assert lambdas.parse_report(EMULATOR_EARLY_TAIL) == lambdas.Report(init_ms=None, duration_ms=0.867,
                                                                        memory_used_mb=None)
    cold = EMULATOR_EARLY_TAIL.replace("Version: 1\n", "Version: 1\n02 Dec 2026 17:14:01,900 [INFO] (rapid) "
                                       "INIT REPORT(durationMs: 912.250000)\n")
    assert lambdas.parse_report(cold) == lambdas.Report(init_ms=912.25, duration_ms=0.867, memory_used_mb=None)
