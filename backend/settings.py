"""Settings read from the environment (and an optional .env file).

The names are the public contract documented in README.md; docker-compose.yml is checked against them.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from prelabel.concurrency import MAX_CONCURRENCY
from prelabel.families import ModelRef, parse_model_list
from prelabel.redact import remember_secrets


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # Models, as "provider:model"; the judge may be a jury: comma-separated "provider:model[@base_url]" entries
    prelabel_annotator: str = Field("openai:gpt-4o-mini", alias="PRELABEL_ANNOTATOR")
    prelabel_judge: str = Field("anthropic:claude-haiku-4-5", alias="PRELABEL_JUDGE")
    prelabel_annotator_base_url: str | None = Field(None, alias="PRELABEL_ANNOTATOR_BASE_URL")
    prelabel_judge_base_url: str | None = Field(None, alias="PRELABEL_JUDGE_BASE_URL")
    prelabel_annotator_family: str | None = Field(None, alias="PRELABEL_ANNOTATOR_FAMILY")
    prelabel_judge_family: str | None = Field(None, alias="PRELABEL_JUDGE_FAMILY")
    prelabel_allow_same_family: bool = Field(False, alias="PRELABEL_ALLOW_SAME_FAMILY")

    # Prompt templates (files); None means the packaged default for the task kind
    prelabel_annotator_prompt: Path | None = Field(None, alias="PRELABEL_ANNOTATOR_PROMPT")
    prelabel_judge_prompt: Path | None = Field(None, alias="PRELABEL_JUDGE_PROMPT")
    prelabel_prompt_name: str | None = Field(None, alias="PRELABEL_PROMPT_NAME")

    # Provider keys: the SDKs' own variables, never logged
    openai_api_key: SecretStr | None = Field(None, alias="OPENAI_API_KEY")
    anthropic_api_key: SecretStr | None = Field(None, alias="ANTHROPIC_API_KEY")
    openai_base_url: str | None = Field(None, alias="OPENAI_BASE_URL")
    anthropic_base_url: str | None = Field(None, alias="ANTHROPIC_BASE_URL")

    # Call behaviour
    # Calls in flight at once per process (README: choosing the concurrency); each costs a coroutine, not a thread.
    prelabel_concurrency: int = Field(16, alias="PRELABEL_CONCURRENCY", ge=1, le=MAX_CONCURRENCY)
    # The live calls' HTTP transport: aiohttp driven directly, or the SDKs' own request path (prelabel.providers.http).
    prelabel_http: Literal["aiohttp", "sdk"] = Field("aiohttp", alias="PRELABEL_HTTP")
    prelabel_timeout: float = Field(60.0, alias="PRELABEL_TIMEOUT", gt=0)
    prelabel_max_retries: int = Field(2, alias="PRELABEL_MAX_RETRIES", ge=0)
    prelabel_predict_deadline: float = Field(85.0, alias="PRELABEL_PREDICT_DEADLINE", gt=0)
    prelabel_max_tasks_per_request: int = Field(2000, alias="PRELABEL_MAX_TASKS_PER_REQUEST", ge=1)
    prelabel_max_request_mb: float = Field(8.0, alias="PRELABEL_MAX_REQUEST_MB", gt=0)
    # /webhook only needs an event's ids: its bodies are held to far less than /predict's.
    prelabel_webhook_max_kb: int = Field(1024, alias="PRELABEL_WEBHOOK_MAX_KB", gt=0)
    # How long /webhook waits for Label Studio to answer the read-back of an annotation (Label Studio itself
    # gives a webhook 1 s; a read-back that outlasts it still records).
    prelabel_webhook_timeout: float = Field(3.0, alias="PRELABEL_WEBHOOK_TIMEOUT", gt=0)
    # Seconds a client has to send a request's headers, and then its whole body, before the server closes it.
    prelabel_read_timeout: float = Field(10.0, alias="PRELABEL_READ_TIMEOUT", gt=0)
    prelabel_max_input_chars: int = Field(24000, alias="PRELABEL_MAX_INPUT_CHARS", gt=100)
    prelabel_annotator_max_tokens: int = Field(512, alias="PRELABEL_ANNOTATOR_MAX_TOKENS", gt=0)
    prelabel_judge_max_tokens: int = Field(256, alias="PRELABEL_JUDGE_MAX_TOKENS", gt=0)
    prelabel_temperature: float = Field(0.0, alias="PRELABEL_TEMPERATURE", ge=0)
    prelabel_judge_reason_max_chars: int | None = Field(None, alias="PRELABEL_JUDGE_REASON_MAX_CHARS", gt=10)
    prelabel_judge_logprobs: bool = Field(True, alias="PRELABEL_JUDGE_LOGPROBS")
    prelabel_cache: bool = Field(True, alias="PRELABEL_CACHE")

    # Client-side rate limits per role (requests and tokens per minute); unset or 0 means none
    prelabel_annotator_rpm: float | None = Field(None, alias="PRELABEL_ANNOTATOR_RPM", ge=0)
    prelabel_annotator_tpm: float | None = Field(None, alias="PRELABEL_ANNOTATOR_TPM", ge=0)
    prelabel_judge_rpm: float | None = Field(None, alias="PRELABEL_JUDGE_RPM", ge=0)
    prelabel_judge_tpm: float | None = Field(None, alias="PRELABEL_JUDGE_TPM", ge=0)

    # A JSON or TOML price table over the built-in list prices (USD per 1M tokens)
    prelabel_prices: Path | None = Field(None, alias="PRELABEL_PRICES")

    # Where the harness keeps what it builds: the Label Studio and local model virtual environments (relative to
    # the working folder), and wheels and models (None: $XDG_CACHE_HOME/prelabel, else ~/.cache/prelabel)
    prelabel_ls_venv: Path = Field(Path(".venv-labelstudio"), alias="PRELABEL_LS_VENV")
    prelabel_local_venv: Path = Field(Path(".venv-localmodel"), alias="PRELABEL_LOCAL_VENV")
    prelabel_cache_dir: Path | None = Field(None, alias="PRELABEL_CACHE_DIR")

    # Label Studio ML backend convention
    label_studio_url: str | None = Field(None, alias="LABEL_STUDIO_URL")
    label_studio_api_key: SecretStr | None = Field(None, alias="LABEL_STUDIO_API_KEY")
    basic_auth_user: str | None = Field(None, alias="BASIC_AUTH_USER")
    basic_auth_pass: SecretStr | None = Field(None, alias="BASIC_AUTH_PASS")
    model_dir: Path = Field(Path(".prelabel"), alias="MODEL_DIR")
    log_level: str = Field("INFO", alias="LOG_LEVEL")

    def model_post_init(self, context: object) -> None:
        # The keys' exact values are scrubbed from provider text, read from the environment or from .env.
        keys = (self.openai_api_key, self.anthropic_api_key, self.label_studio_api_key, self.basic_auth_pass)
        remember_secrets(key.get_secret_value() for key in keys if key)
        super().model_post_init(context)

    @field_validator("prelabel_annotator")
    @classmethod
    def _provider_model(cls, value: str) -> str:
        ModelRef.parse(value)  # raises a clear error on a malformed value
        return value

    @field_validator("prelabel_judge")
    @classmethod
    def _jurors(cls, value: str) -> str:
        parse_model_list(value, "PRELABEL_JUDGE")  # names the setting and the bad entry
        return value

    @field_validator("prelabel_ls_venv", "prelabel_local_venv", "prelabel_cache_dir", "prelabel_prices", mode="before")
    @classmethod
    def _empty_path_is_unset(cls, value: object, info: ValidationInfo) -> object:
        """An empty variable means the default (Path("") would be the working folder)."""
        if value == "":
            assert info.field_name is not None
            return cls.model_fields[info.field_name].default
        return value

    @model_validator(mode="after")
    def _basic_auth_needs_both(self) -> Settings:
        """A user without a password would make the password check compare against "": refuse to start."""
        password = self.basic_auth_pass.get_secret_value() if self.basic_auth_pass else ""
        if self.basic_auth_user and not password:
            raise ValueError(
                "BASIC_AUTH_USER is set but BASIC_AUTH_PASS is empty: set both to require basic auth, or neither"
            )
        if password and not self.basic_auth_user:
            raise ValueError("BASIC_AUTH_PASS is set but BASIC_AUTH_USER is empty: set both, or neither")
        return self

    @property
    def label_studio_credentials(self) -> tuple[str, str] | None:
        """(LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY) when both are set, else None."""
        key = self.label_studio_api_key.get_secret_value() if self.label_studio_api_key else ""
        return (self.label_studio_url, key) if self.label_studio_url and key else None

    @cached_property
    def annotator(self) -> ModelRef:
        return ModelRef.parse(
            self.prelabel_annotator,
            base_url=self.prelabel_annotator_base_url,
            family=self.prelabel_annotator_family,
        )

    @cached_property
    def judges(self) -> list[ModelRef]:
        """The judge, or the jurors of a jury, in PRELABEL_JUDGE's order. PRELABEL_JUDGE_BASE_URL and
        PRELABEL_JUDGE_FAMILY apply to the first entry only (its own @base_url wins); the others' families come
        from their names."""
        refs = []
        for number, (spec, base_url) in enumerate(parse_model_list(self.prelabel_judge, "PRELABEL_JUDGE")):
            first = number == 0
            refs.append(
                ModelRef.parse(
                    spec,
                    base_url=base_url or (self.prelabel_judge_base_url if first else None),
                    family=self.prelabel_judge_family if first else None,
                )
            )
        return refs

    @cached_property
    def judge(self) -> ModelRef:
        """The (first) judge."""
        return self.judges[0]

    def rate_limits(self, role: str) -> tuple[float | None, float | None]:
        """(requests, tokens) per minute for "annotator" or "judge"; None where there is no limit. In a jury the
        judge's limits hold for each juror, each with its own bucket (prelabel.ratelimit keys them by model)."""
        if role == "annotator":
            rpm, tpm = self.prelabel_annotator_rpm, self.prelabel_annotator_tpm
        else:
            rpm, tpm = self.prelabel_judge_rpm, self.prelabel_judge_tpm
        return (rpm or None), (tpm or None)

    @property
    def store_path(self) -> Path:
        return self.model_dir / "prelabel.sqlite3"
