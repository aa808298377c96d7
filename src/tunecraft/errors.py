"""User-facing errors: the CLI prints their message, never a traceback."""


class TunecraftError(Exception):
    """A problem the user can fix (bad recipe, bad data, missing asset)."""


class ConfigError(TunecraftError):
    """The recipe or an override is invalid."""


class DataError(TunecraftError):
    """Input data is malformed; the message names file, line and field."""

    def __init__(self, path, line: int | None, field: str | None, problem: str):
        where = str(path)
        if line is not None:
            unit = "row" if where.endswith(".parquet") else "id" if where.endswith((".sqlite", ".db")) else "line"
            where += f", {unit} {line}"
        if field is not None:
            where += f", field '{field}'"
        super().__init__(f"{where}: {problem}")
        self.path, self.line, self.field, self.problem = str(path), line, field, problem


class AssetError(TunecraftError):
    """A bundled model or dataset is not installed."""


class TrainingFailed(TunecraftError):
    """A run that cannot give a usable model (a NaN/inf loss): it ends without exporting one."""
