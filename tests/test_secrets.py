"""Secrets: resolving them from env vars and files, and masking every form they take."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import pytest

from forge_core.exceptions import ConfigError
from forge_core.secrets import MASK, Redactor, redact_file, resolve_secrets
from forge_core.spec import SecretSpec, TaskSpec, WorkflowSpec

SECRET = 'hunter2-"quoted"/\\path'


def workflow(**secrets: SecretSpec) -> WorkflowSpec:
    return WorkflowSpec(name="etl", tasks=(TaskSpec(name="t", command="true"),), secrets=secrets)


class TestResolveSecrets:
    def test_reads_env_and_files(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Env-backed, implicitly-named and file-backed secrets all resolve to task env vars."""
        monkeypatch.setenv("PROD_DB_PASSWORD", "pw-from-env")
        monkeypatch.setenv("API_TOKEN", "token-123")
        (tmp_path / "key.txt").write_text("from-file\n")
        spec = workflow(DB_PASSWORD=SecretSpec(env="PROD_DB_PASSWORD"),
                        API_TOKEN=SecretSpec(), KEY=SecretSpec(file="key.txt"))
        assert resolve_secrets(spec, tmp_path) == {
            "DB_PASSWORD": "pw-from-env", "API_TOKEN": "token-123", "KEY": "from-file"}

    def test_missing_env_names_workflow_and_secret(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """An unset variable is a ConfigError naming the workflow, the secret and the variable."""
        monkeypatch.delenv("NOPE_NOT_SET", raising=False)
        with pytest.raises(ConfigError, match=r"workflow 'etl' secret 'X'.*NOPE_NOT_SET"):
            resolve_secrets(workflow(X=SecretSpec(env="NOPE_NOT_SET")), Path())

    def test_missing_file_is_a_config_error(self, tmp_path: Path) -> None:
        """An unreadable secret file is a ConfigError, not an OSError."""
        with pytest.raises(ConfigError, match="secret 'K': cannot read"):
            resolve_secrets(workflow(K=SecretSpec(file="absent")), tmp_path)


class TestRedactor:
    redactor = Redactor([SECRET, "abc"])

    def test_masks_raw_and_json_escaped_forms(self) -> None:
        """The value and its JSON-escaped form both become the mask."""
        text = f"raw={SECRET} json={json.dumps({'p': SECRET})}"
        out = self.redactor.redact(text)
        assert SECRET not in out
        assert json.dumps(SECRET)[1:-1] not in out
        assert out.count(MASK) == 2

    @pytest.mark.parametrize("prefix", [b"", b"x", b"xy", b"xyz", b"head:"])
    def test_masks_base64_at_every_alignment(self, prefix: bytes) -> None:
        """The secret is masked inside a base64 blob whatever its byte offset."""
        blob = base64.b64encode(prefix + SECRET.encode() + b"tail").decode()
        out = self.redactor.redact(f"Authorization: Basic {blob}")
        assert MASK in out
        assert base64.b64decode(blob).find(SECRET.encode()) >= 0

    def test_short_values_are_not_masked(self) -> None:
        """Values under four characters are left alone, as documented."""
        assert self.redactor.redact("abc abcd") == "abc abcd"

    def test_redact_obj_walks_nested_data(self) -> None:
        """Strings inside dicts, lists and tuples are redacted; other values kept."""
        got = self.redactor.redact_obj({"a": [SECRET, 3, (f"x{SECRET}",)], SECRET: None})
        assert got == {"a": [MASK, 3, (f"x{MASK}",)], MASK: None}

    def test_logging_filter_redacts_arguments(self, caplog: pytest.LogCaptureFixture) -> None:
        """A log call whose argument is the secret is stored masked."""
        logger = logging.getLogger("forge.test.secrets")
        flt = self.redactor.logging_filter()
        logger.addFilter(flt)
        try:
            with caplog.at_level(logging.INFO, logger="forge.test.secrets"):
                logger.info("password is %s", SECRET)
        finally:
            logger.removeFilter(flt)
        assert caplog.records[0].getMessage() == f"password is {MASK}"

    def test_redact_file_rewrites_in_place(self, tmp_path: Path) -> None:
        """A log file holding the secret is rewritten without it and keeps its mode."""
        path = tmp_path / "task.log"
        path.write_bytes(f"line1\nsecret {SECRET}\n".encode() + b"\xff-raw\n")
        path.chmod(0o640)
        assert redact_file(path, self.redactor) is True
        assert path.read_bytes() == f"line1\nsecret {MASK}\n".encode() + b"\xff-raw\n"
        assert path.stat().st_mode & 0o777 == 0o640
        assert redact_file(path, self.redactor) is False
        assert [p.name for p in tmp_path.iterdir()] == ["task.log"]
