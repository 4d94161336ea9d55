"""Reading the SCL 2017 flights file and deriving the challenge's columns.

The raw file is never modified or copied: it is read from the path the user gives.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import os
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import holidays
import numpy as np
import pandas as pd

from app.errors import InvalidFlight
from app.inference import features
from app.inference.flights import Flight, FlightValidator

CSV_SHA256 = "66d7334fbc9c2c070842e9a99d465f552f94a2b1d5c4047be825e5954e12e829"
DEFAULT_DATA = Path("data/raw/dataset_SCL.csv.gz")
SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared/data/dataset_SCL.csv.gz"
DATA_ENV = "SCL_DATA"
"""Where the real data file is: the one setting of the real-data tests, `make export` (the
Makefile exports it with the same default) and the retrain workflow (its `dvc pull` target)."""
REQUIRED_COLUMNS = ("Fecha-I", "Vlo-I", "Des-I", "Emp-I", "Fecha-O", "TIPOVUELO", "OPERA")
DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S"
EARLIEST_MINUTES = 60
"""A flight operated more than this many minutes before its schedule is a data error (a wrong
date or time), not an early departure: its row is refused, since its label would be `on time`.
The SCL 2017 file's earliest is 14 minutes early."""
HOLIDAY_YEARS = (2016, 2036)
"""The Chilean holiday calendar written into the model card covers these years (inclusive); data
and requests must depart in all but the last (app.inference.features.Calendar.exact_years)."""


def data_location(environ: Mapping[str, str] = os.environ) -> Path:
    """$SCL_DATA when set, else the shared copy beside the project."""
    return Path(environ.get(DATA_ENV) or SHARED_DATA)


class DataError(Exception):
    """The data file is missing or not the SCL flights file: the message says how."""


def unreadable(path: Path, error: BaseException) -> DataError:
    """A file `path` that cannot be read (its permissions, its directory's; a gzip cut short or
    corrupt), in one line naming it: the OS's reason where it gives one."""
    return DataError(f"cannot read {path}: {getattr(error, 'strerror', None) or error}")


@dataclass(frozen=True)
class Dataset:
    table: pd.DataFrame
    """The raw columns plus the challenge's: high_season, min_diff, delay_15, period_day."""
    csv_sha256: str

    @property
    def labels(self) -> np.ndarray:
        labels: np.ndarray = self.table["delay_15"].to_numpy(dtype=np.int64)
        return labels

    @property
    def dates(self) -> np.ndarray:
        """Scheduled calendar date per row: the unit that cross-validation keeps together."""
        dates: np.ndarray = self.table["Fecha-I"].dt.strftime("%Y-%m-%d").to_numpy()
        return dates

    def flights(self, schedule: bool) -> list[Flight]:
        """Rows as the service will see them, through the service's own validator."""
        table = self.table
        operators = table["OPERA"].unique().tolist()
        validator = FlightValidator(operators, max_flights=len(table))
        records = {
            "OPERA": table["OPERA"].tolist(),
            "TIPOVUELO": table["TIPOVUELO"].tolist(),
            # The data set's MES is the month of operation; the model may only know the
            # scheduled one (they differ on 9 rows, flights pushed past midnight of a month's end).
            "MES": table["Fecha-I"].dt.month.tolist(),
        }
        if schedule:
            records["Fecha-I"] = table["Fecha-I"].dt.strftime(DATETIME_FORMAT).tolist()
            for column in ("Des-I", "Emp-I", "Vlo-I"):
                records[column] = table[column].str.strip().tolist()
        rows = [
            dict(zip(records, values, strict=True))
            for values in zip(*records.values(), strict=True)
        ]
        return validator.flights(rows)


@functools.cache
def departure_years() -> tuple[int, int]:
    """The years of departure (first, last) the calendar the export writes encodes exactly: the
    service's rule (app.inference.features.Calendar.exact_years), so that training data and
    requests are bounded alike. Cached: the holidays package takes about 80 ms to list them."""
    return features.Calendar(chilean_holidays()).exact_years


def chilean_holidays(years: tuple[int, int] = HOLIDAY_YEARS) -> np.ndarray:
    """Public holidays of Chile, from the `holidays` package (training-time dependency only:
    the calendar goes into the model card, so the service needs no holiday library)."""
    days = holidays.country_holidays("CL", years=range(years[0], years[1] + 1))
    return np.array(sorted(days), dtype="datetime64[D]")


def csv_bytes(path: Path) -> bytes:
    """The CSV a data file holds, plain or gzip (which CSV_SHA256 and the cards' `csv_sha256`
    hash: the same data either way). One that cannot be read (its permissions, a gzip cut short
    or corrupt) is a one-line DataError naming it."""
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
        raise unreadable(path, error) from None


def csv_sha256(path: Path) -> str:
    return hashlib.sha256(csv_bytes(path)).hexdigest()


def load(path: Path) -> Dataset:
    try:
        found = path.is_file()
    except OSError as error:  # its directory's permissions refuse the look-up
        raise unreadable(path, error) from None
    if not found:
        raise DataError(
            f"data file not found: {path}. Put the SCL 2017 flights file (dataset_SCL.csv or .csv.gz, "
            f"CSV sha256 {CSV_SHA256}) there, or give its path (--data, or make's SCL_DATA=)"
        )
    raw = csv_bytes(path)
    table = _read_csv(raw, path)
    dataset = Dataset(derive_columns(table), hashlib.sha256(raw).hexdigest())
    _check_flights(dataset, path)
    return dataset


def _check_flights(dataset: Dataset, path: Path) -> None:
    """Every row must be a flight the service accepts (the export trains on them as such):
    otherwise a one-line DataError naming its line and field, here, rather than the validator's
    error escaping the export after the minimal model's whole search."""
    table = dataset.table
    blank = np.flatnonzero((table["OPERA"].str.strip() == "").to_numpy())
    if blank.size:  # the validator would allow it: it takes the data's own operators
        raise DataError(f"{path}: row {int(blank[0]) + 2} (line in the file), column OPERA: empty")
    try:
        dataset.flights(schedule=True)
    except InvalidFlight as error:
        detail = error.detail
        raise DataError(
            f"{path}: row {int(detail['index']) + 2} (line in the file), column "
            f"{detail['field']}: {error.message.split(': ', 1)[1]}: {detail['value']!r}"
        ) from None


def _read_csv(raw: bytes, path: Path) -> pd.DataFrame:

    try:
        table = pd.read_csv(io.BytesIO(raw), dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty") from None
    except pd.errors.ParserError as error:
        raise DataError(f"{path}: not a well-formed CSV: {' '.join(str(error).split())}") from None
    except UnicodeDecodeError as error:
        raise DataError(
            f"{path}: not UTF-8 text (byte {error.start}: {error.reason}); save it as UTF-8"
        ) from None
    missing = [column for column in REQUIRED_COLUMNS if column not in table.columns]
    if missing:
        raise DataError(
            f"{path}: missing column {missing[0]!r} (needs {', '.join(REQUIRED_COLUMNS)})"
        )
    if table.empty:
        raise DataError(f"{path}: the file has a header but no rows")
    repeated = np.flatnonzero(table.duplicated().to_numpy())
    if repeated.size:  # the same flight twice would weigh double in training and evaluation
        row = int(repeated[0])
        first = int(np.flatnonzero((table == table.iloc[row]).all(axis=1).to_numpy())[0])
        raise DataError(
            f"{path}: row {row + 2} (line in the file) repeats row {first + 2} exactly: "
            "remove the duplicate"
        )
    for column in ("Fecha-I", "Fecha-O"):
        parsed = pd.to_datetime(table[column], format=DATETIME_FORMAT, errors="coerce")
        bad = np.flatnonzero(parsed.isna().to_numpy())
        if bad.size:
            row = int(bad[0])
            raise DataError(
                f"{path}: row {row + 2} (line in the file), column {column}: "
                f"unparseable date {table[column].iloc[row]!r}, expected YYYY-MM-DD HH:MM:SS"
            )
        table[column] = parsed
    first, last = departure_years()
    years = table["Fecha-I"].dt.year.to_numpy()
    outside = np.flatnonzero((years < first) | (years > last))
    if outside.size:  # their holiday features would be a year's without holidays
        row = int(outside[0])
        raise DataError(
            f"{path}: row {row + 2} (line in the file), column Fecha-I: "
            f"{table['Fecha-I'].iloc[row]} is outside the holiday calendar's years "
            f"{first} to {last} (train.data.HOLIDAY_YEARS)"
        )
    early = (table["Fecha-I"] - table["Fecha-O"]).dt.total_seconds().to_numpy() / 60
    wrong = np.flatnonzero(early > EARLIEST_MINUTES)
    if wrong.size:
        row = int(wrong[0])
        raise DataError(
            f"{path}: row {row + 2} (line in the file), column Fecha-O: "
            f"{table['Fecha-O'].iloc[row]} is {early[row]:.0f} minutes before Fecha-I "
            f"{table['Fecha-I'].iloc[row]} (more than {EARLIEST_MINUTES} early: a wrong date "
            "or time, train.data.EARLIEST_MINUTES)"
        )
    return table


def derive_columns(table: pd.DataFrame) -> pd.DataFrame:
    """Adds the challenge's columns exactly as the shared data README defines them."""
    scheduled = table["Fecha-I"]
    table = table.copy()
    table["high_season"] = high_season(scheduled)
    table["min_diff"] = (table["Fecha-O"] - scheduled).dt.total_seconds() / 60
    table["delay_15"] = (table["min_diff"] > 15).astype(np.int64)
    table["period_day"] = period_day(scheduled)
    return table


def high_season(scheduled: pd.Series) -> pd.Series:
    departure = scheduled.to_numpy().astype("datetime64[m]")
    return pd.Series(features.high_season(departure), index=scheduled.index)


def period_day(scheduled: pd.Series) -> pd.Series:
    """morning 05:00-11:59, afternoon 12:00-18:59, night 19:00-04:59."""
    minutes = (scheduled.dt.hour * 60 + scheduled.dt.minute).to_numpy()
    labels = np.where(
        (minutes >= 5 * 60) & (minutes < 12 * 60),
        "morning",
        np.where((minutes >= 12 * 60) & (minutes < 19 * 60), "afternoon", "night"),
    )
    return pd.Series(labels, index=scheduled.index)
