"""Secrets: resolving them from env vars and files, and masking every form they take."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import pytest

from forge_core.exceptions import ConfigError
from forge_core.secrets import MASK, Redactor, resolve_secrets
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

    def test_an_empty_secret_is_a_config_error(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A variable set to nothing, or a file holding only a newline, is refused like a
        missing one: a task would run with an empty credential."""
        monkeypatch.setenv("EMPTY_TOKEN", "")
        with pytest.raises(ConfigError, match=r"secret 'X': environment variable EMPTY_TOKEN "
                                              r"is empty"):
            resolve_secrets(workflow(X=SecretSpec(env="EMPTY_TOKEN")), tmp_path)
        (tmp_path / "key.txt").write_text("\n")
        with pytest.raises(ConfigError, match=r"secret 'K': .*key\.txt is empty"):
            resolve_secrets(workflow(K=SecretSpec(file="key.txt")), tmp_path)

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

    def test_stream_masks_a_secret_split_at_any_point(self) -> None:
        """Fed in two pieces cut anywhere, every form of the secret is masked and nothing
        else changes (non-UTF-8 bytes included)."""
        encoded = base64.b64encode(SECRET.encode()).decode()
        text = f"a {SECRET} b {json.dumps(SECRET)} c {encoded} d".encode() + b"\xff\n"
        expected = self.redactor.redact(text.decode("utf-8", "surrogateescape"))
        for cut in range(len(text) + 1):
            stream = self.redactor.stream()
            assert stream is not None
            out = stream.feed(text[:cut]) + stream.feed(text[cut:]) + stream.flush()
            assert out.decode("utf-8", "surrogateescape") == expected
            assert SECRET.encode() not in out

    def test_stream_holds_back_only_what_could_begin_a_secret(self) -> None:
        """A line ending in the secret is written masked at once; a tail that could be the
        start of the secret waits for more bytes."""
        stream = self.redactor.stream()
        assert stream is not None
        assert stream.feed(f"token={SECRET}\n".encode()) == f"token={MASK}\n".encode()
        assert stream.feed(b"next " + SECRET[:5].encode()) == b"next "
        assert stream.feed(SECRET[5:].encode() + b"!") == f"{MASK}!".encode()
        assert stream.flush() == b""

    def test_no_secrets_means_no_stream(self) -> None:
        """Without a secret long enough to mask, logs keep their direct path."""
        assert Redactor(["ab"]).stream() is None
