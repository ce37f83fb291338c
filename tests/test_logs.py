from deploy.logs import mask
from portal.models import DeploymentStep


def test_it_masks_aws_keys_passwords_and_url_credentials():
    text = ("key AKIAABCDEFGHIJKLMNOP secret aws_secret_access_key=wJalrXUtnFEMI/K7MDENG "
            "clone https://oauth2:glpat-abcdefghijklmnopqrstu@gitlab.example.com/x.git password: hunter22")
    masked = mask(text)
    for secret in ("AKIAABCDEFGHIJKLMNOP", "wJalrXUtnFEMI", "glpat-abcdefghijklmnopqrstu", "hunter22"):
        assert secret not in masked
    assert "gitlab.example.com/x.git" in masked


def test_it_masks_known_secret_values_anywhere():
    assert mask("login with s3cr3t-value ok", "s3cr3t-value") == "login with *** ok"


def test_it_leaves_ordinary_build_output_alone():
    line = "#7 [deps 2/3] RUN pip install --target /deps -r requirements.txt"
    assert mask(line) == line
    assert DeploymentStep.clean_output(line) == line
