"""Connection settings: explicit arguments first, then `LAKEHOUSE_*` and the usual AWS environment variables."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from dagster_lakehouse.lakehouse.errors import LakehouseError
from dagster_lakehouse.lakehouse.locations import file_uri, local_io_properties, sqlite_url

DEFAULT_PATH = ".lakehouse"
DEFAULT_STORAGE_RETRY_SECONDS = 30.0
DEFAULT_HISTORY_RETENTION = timedelta(days=7)
"""How long every past commit stays readable (`main@<commit>`), revertable, and safe from `gc`."""


@dataclass(frozen=True)
class LakehouseConfig:
    """Where the catalog database and the warehouse (data files) live, plus FileIO properties.

    `storage_retry_seconds` bounds how long an operation retries transient object-store errors (`storage.retrying`);
    `history_retention` is how long past commits stay readable and revertable: `gc` keeps every file they reach.
    """

    catalog_uri: str
    warehouse: str
    properties: dict[str, str] = field(default_factory=dict)
    storage_retry_seconds: float = DEFAULT_STORAGE_RETRY_SECONDS
    history_retention: timedelta = DEFAULT_HISTORY_RETENTION

    @classmethod
    def local(cls, path: str | os.PathLike[str] = DEFAULT_PATH) -> LakehouseConfig:
        """The embedded default: a SQLite catalog file and a warehouse folder under `path` (any characters: the
        catalog URL and the warehouse URI escape them, `locations`)."""
        root = Path(path).expanduser().resolve()
        (root / "warehouse").mkdir(parents=True, exist_ok=True)
        return cls(catalog_uri=sqlite_url(root / "catalog.db"), warehouse=file_uri(root / "warehouse"))

    @classmethod
    def resolve(
        cls,
        catalog_uri: str | None = None,
        warehouse: str | None = None,
        properties: dict[str, str] | None = None,
        path: str | os.PathLike[str] | None = None,
        environ: dict[str, str] | None = None,
        storage_retry_seconds: float | None = None,
        history_retention: timedelta | None = None,
    ) -> LakehouseConfig:
        """Fill what was not given from the environment; with nothing given, the local default."""
        env = os.environ if environ is None else environ
        catalog_uri = catalog_uri or env.get("LAKEHOUSE_CATALOG_URI")
        warehouse = warehouse or env.get("LAKEHOUSE_WAREHOUSE")
        if bool(catalog_uri) != bool(warehouse):
            given, missing = ("catalog_uri", "warehouse") if catalog_uri else ("warehouse", "catalog_uri")
            raise LakehouseError(
                f"a lakehouse {given} was given but no {missing}: set both (arguments, or LAKEHOUSE_CATALOG_URI "
                "and LAKEHOUSE_WAREHOUSE), or neither for the local lakehouse under LAKEHOUSE_PATH/.lakehouse"
            )
        merged = {**_env_properties(warehouse or "", env), **(properties or {})}
        local = cls.local(path or env.get("LAKEHOUSE_PATH") or DEFAULT_PATH) if not (catalog_uri and warehouse) else None
        warehouse = warehouse or local.warehouse  # type: ignore[union-attr]
        return cls(
            catalog_uri=catalog_uri or local.catalog_uri,  # type: ignore[union-attr]
            warehouse=warehouse,
            properties=local_io_properties(warehouse, {key: str(value) for key, value in merged.items()}),
            storage_retry_seconds=_retry_seconds(storage_retry_seconds, env),
            history_retention=_retention(history_retention, env),
        )


def _retry_seconds(given: float | None, env: os._Environ[str] | dict[str, str]) -> float:
    """The storage retry bound: the argument, else `LAKEHOUSE_STORAGE_RETRY_SECONDS`, else the default."""
    source = "storage_retry_seconds"
    value: object = given
    if value is None:
        source, value = "LAKEHOUSE_STORAGE_RETRY_SECONDS", env.get("LAKEHOUSE_STORAGE_RETRY_SECONDS")
        if not value:
            return DEFAULT_STORAGE_RETRY_SECONDS
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise LakehouseError(f"{source} must be a number of seconds, not {value!r}") from None
    if not seconds >= 0:
        raise LakehouseError(f"{source} must be 0 or more seconds (0: fail on the first storage error), not {value!r}")
    return seconds


def _retention(given: timedelta | None, env: os._Environ[str] | dict[str, str]) -> timedelta:
    """The history retention window: the argument, else `LAKEHOUSE_HISTORY_RETENTION_DAYS`, else 7 days."""
    if given is not None:
        if not isinstance(given, timedelta) or given < timedelta(0):
            raise LakehouseError(f"history_retention must be a timedelta of 0 or more, not {given!r}")
        return given
    raw = env.get("LAKEHOUSE_HISTORY_RETENTION_DAYS")
    if not raw:
        return DEFAULT_HISTORY_RETENTION
    try:
        days = float(raw)
    except ValueError:
        raise LakehouseError(f"LAKEHOUSE_HISTORY_RETENTION_DAYS must be a number of days, not {raw!r}") from None
    if not 0 <= days < 100_000:
        raise LakehouseError(f"LAKEHOUSE_HISTORY_RETENTION_DAYS must be 0 or more days (0: keep no history), not {raw!r}")
    return timedelta(days=days)


def _env_properties(warehouse: str, env: os._Environ[str] | dict[str, str]) -> dict[str, str]:
    props: dict[str, str] = {}
    if raw := env.get("LAKEHOUSE_PROPERTIES"):
        try:
            parsed = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise LakehouseError(f"LAKEHOUSE_PROPERTIES is not valid JSON ({exc}): expected an object of strings") from None
        if not isinstance(parsed, dict):
            raise LakehouseError("LAKEHOUSE_PROPERTIES must be a JSON object, e.g. {\"s3.region\": \"eu-west-1\"}")
        props.update(parsed)
    if warehouse.startswith(("s3://", "s3a://")):
        pairs = {
            "s3.endpoint": env.get("LAKEHOUSE_S3_ENDPOINT") or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL"),
            "s3.region": env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"),
            "s3.access-key-id": env.get("AWS_ACCESS_KEY_ID"),
            "s3.secret-access-key": env.get("AWS_SECRET_ACCESS_KEY"),
            "s3.session-token": env.get("AWS_SESSION_TOKEN"),
        }
        props.update({key: value for key, value in pairs.items() if value and key not in props})
    return props
