from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import (
    COLUMNS,
    ROOT,
    challenge_data,
    refuse_access,
    synthetic_rows,
    write_csv,
)
from train.data import (
    CSV_SHA256,
    DATA_ENV,
    SHARED_DATA,
    DataError,
    Dataset,
    data_location,
    derive_columns,
    load,
)


def _scheduled(*values: str) -> pd.DataFrame:
    scheduled = pd.to_datetime(pd.Series(values))
    return pd.DataFrame({"Fecha-I": scheduled, "Fecha-O": scheduled})


@pytest.mark.parametrize(
    ("when", "season"),
    [
        ("2017-12-14 23:59:00", 0),
        ("2017-12-15 00:00:00", 1),
        ("2017-12-31 23:59:00", 1),
        ("2017-01-01 00:00:00", 1),
        ("2017-03-03 23:59:00", 1),
        ("2017-03-04 00:00:00", 0),
        ("2017-07-14 23:59:00", 0),
        ("2017-07-15 00:00:00", 1),
        ("2017-07-31 23:59:00", 1),
        ("2017-08-01 00:00:00", 0),
        ("2017-09-10 23:59:00", 0),
        ("2017-09-11 00:00:00", 1),
        ("2017-09-30 23:59:00", 1),
        ("2017-10-01 00:00:00", 0),
    ],
)
def test_high_season_boundaries(when: str, season: int) -> None:
    assert derive_columns(_scheduled(when))["high_season"].tolist() == [season]


@pytest.mark.parametrize(
    ("when", "period"),
    [
        ("2017-05-01 04:59:00", "night"),
        ("2017-05-01 05:00:00", "morning"),
        ("2017-05-01 11:59:00", "morning"),
        ("2017-05-01 12:00:00", "afternoon"),
        ("2017-05-01 18:59:00", "afternoon"),
        ("2017-05-01 19:00:00", "night"),
        ("2017-05-01 00:00:00", "night"),
    ],
)
def test_period_day_boundaries(when: str, period: str) -> None:
    assert derive_columns(_scheduled(when))["period_day"].tolist() == [period]


@pytest.mark.parametrize(("minutes", "delayed"), [(-14, 0), (15, 0), (15.5, 1), (16, 1), (161, 1)])
def test_delay_is_strictly_more_than_15_minutes(minutes: float, delayed: int) -> None:
    table = _scheduled("2017-05-01 10:00:00")
    table["Fecha-O"] = table["Fecha-I"] + pd.Timedelta(minutes=minutes)
    derived = derive_columns(table)
    assert derived["min_diff"].tolist() == [minutes]
    assert derived["delay_15"].tolist() == [delayed]


def test_missing_file_says_where_to_put_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=f"data file not found: .*nope.csv.*{CSV_SHA256}.*DATA="):
        load(tmp_path / "nope.csv")


def test_missing_column_is_named(tmp_path: Path) -> None:
    columns = [c for c in COLUMNS if c != "Emp-I"]
    rows = [{k: v for k, v in row.items() if k != "Emp-I"} for row in synthetic_rows(5)]
    with pytest.raises(DataError, match="missing column 'Emp-I'"):
        load(write_csv(tmp_path / "f.csv", rows, columns))


def test_unparseable_date_names_row_and_column(tmp_path: Path) -> None:
    rows = synthetic_rows(5)
    rows[3]["Fecha-O"] = "2017-13-01 00:00:00"
    with pytest.raises(
        DataError,
        match=r"row 5 \(line in the file\), column Fecha-O: unparseable date '2017-13-01 00:00:00'",
    ):
        load(write_csv(tmp_path / "f.csv", rows))


@pytest.mark.parametrize("departure", ["2015-12-31 23:59:00", "2036-12-28 10:00:00"])
def test_a_departure_outside_the_holiday_calendars_years_names_row_and_years(
    tmp_path: Path, departure: str
) -> None:
    """Training on it would have fitted holiday features of a year without holidays."""
    rows = synthetic_rows(5)
    rows[2]["Fecha-I"] = departure
    with pytest.raises(
        DataError,
        match=rf"row 4 \(line in the file\), column Fecha-I: {departure} is outside the holiday "
        r"calendar's years 2016 to 2035",
    ):
        load(write_csv(tmp_path / "f.csv", rows))


def test_empty_files(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="the file is empty"):
        load(tmp_path / "empty.csv")
    with pytest.raises(DataError, match="header but no rows"):
        load(write_csv(tmp_path / "header.csv", []))


def test_gzip_and_plain_give_the_same_dataset(tmp_path: Path) -> None:
    rows = synthetic_rows(50)
    plain = load(write_csv(tmp_path / "f.csv", rows))
    packed = load(write_csv(tmp_path / "f.csv.gz", rows))
    assert plain.csv_sha256 == packed.csv_sha256
    pd.testing.assert_frame_equal(plain.table, packed.table)


def test_no_as_operated_column_reaches_the_features(tmp_path: Path) -> None:
    """Scramble every -O column but Fecha-O (the label's source): the flights, and so the
    features, must not change."""
    rows = synthetic_rows(200)
    scrambled = [
        row
        | {
            "Vlo-O": "9",
            "Ori-O": "XXXX",
            "Des-O": "YYYY",
            "Emp-O": "ZZZ",
            "DIA": "1",
            "MES": "1",
            "AÑO": "1999",
            "DIANOM": "Lunes",
        }
        for row in rows
    ]
    original = load(write_csv(tmp_path / "a.csv", rows))
    changed = load(write_csv(tmp_path / "b.csv", scrambled))
    for schedule in (False, True):
        assert original.flights(schedule) == changed.flights(schedule)
    rows_late = [row | {"Fecha-O": "2017-12-31 23:59:00"} for row in rows]
    assert load(write_csv(tmp_path / "c.csv", rows_late)).flights(True) == original.flights(True)


def test_real_data_matches_the_shared_readme(real_data: Path) -> None:
    if not challenge_data(real_data):
        pytest.skip(f"{real_data} is not the challenge's 2017 file the shared README describes")
    dataset = load(real_data)
    assert dataset.csv_sha256 == CSV_SHA256
    assert len(dataset.table) == 68_206
    assert int(dataset.labels.sum()) == 12_614
    assert dataset.table["min_diff"].min() == -14
    assert dataset.table["min_diff"].max() == 161
    flights = dataset.flights(schedule=True)
    assert len(flights) == 68_206
    assert (
        np.unique(dataset.dates).size == 365
    )  # scheduled dates: all of 2017 (AÑO=2018 is as operated)


def test_dataset_labels_and_dates(synthetic_csv: Path) -> None:
    dataset: Dataset = load(synthetic_csv)
    assert dataset.labels.dtype == np.int64
    assert len(dataset.dates) == len(dataset.labels)
    assert all(len(date) == 10 for date in dataset.dates[:20])


def test_one_setting_locates_the_real_data_for_tests_and_make_export(tmp_path: Path) -> None:
    assert (
        data_location({DATA_ENV: str(tmp_path / "flights.csv.gz")}) == tmp_path / "flights.csv.gz"
    )
    assert data_location({}) == SHARED_DATA
    # The Makefile's default is the same file, and `make export` reads the same variable.
    makefile = (ROOT / "Makefile").read_text()
    default = re.search(r"^SCL_DATA \?= (\S+)$", makefile, re.MULTILINE)
    assert default
    assert (ROOT / default.group(1)).resolve() == SHARED_DATA
    assert "export SCL_DATA" in makefile
    data = write_csv(tmp_path / "x.csv.gz", synthetic_rows(10))
    dry_run = subprocess.run(
        ["make", "-n", "export", f"SCL_DATA={data}", f"MODELS_DIR={tmp_path}/models"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert f"--data {data} " in dry_run.stdout, dry_run.stdout + dry_run.stderr


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("Vlo-I", "", r"row 4 \(line in the file\), column Vlo-I: not a flight number: ''"),
        ("Des-I", "scfa", r"row 4 \(line in the file\), column Des-I: not an ICAO airport code"),
        ("TIPOVUELO", "X", r"row 4 \(line in the file\), column TIPOVUELO: not a flight type"),
        ("OPERA", " ", r"row 4 \(line in the file\), column OPERA: empty"),
    ],
)
def test_a_row_the_service_would_refuse_is_a_one_line_data_error(
    tmp_path: Path, column: str, value: str, message: str
) -> None:
    """Before: load took it, `dvc repro prepare` passed, and the export's validator raised
    InvalidFlight (a traceback) after the minimal model's whole search; an empty OPERA was
    even served as an allowed airline."""
    rows = synthetic_rows(5)
    rows[2][column] = value
    with pytest.raises(DataError, match=message) as error:
        load(write_csv(tmp_path / "f.csv", rows))
    assert "\n" not in str(error.value)


def test_a_repeated_row_is_refused_naming_both_lines(tmp_path: Path) -> None:
    """Before: counted twice in training and evaluation, silently."""
    rows = synthetic_rows(5)
    with pytest.raises(DataError, match=r"row 7 \(line in the file\) repeats row 3 exactly"):
        load(write_csv(tmp_path / "f.csv", [*rows, rows[1]]))


def test_a_flight_operated_hours_before_its_schedule_is_refused(tmp_path: Path) -> None:
    """Before: labelled on time (min_diff -180), silently. An hour early is still taken."""
    rows = synthetic_rows(5)
    rows[1]["Fecha-O"] = rows[1]["Fecha-I"]
    hour_early = pd.Timestamp(rows[1]["Fecha-I"]) - pd.Timedelta(minutes=60)
    rows[1]["Fecha-O"] = hour_early.strftime("%Y-%m-%d %H:%M:%S")
    assert load(write_csv(tmp_path / "ok.csv", rows)).table["min_diff"].iloc[1] == -60
    three_hours = pd.Timestamp(rows[1]["Fecha-I"]) - pd.Timedelta(hours=3)
    rows[1]["Fecha-O"] = three_hours.strftime("%Y-%m-%d %H:%M:%S")
    with pytest.raises(
        DataError, match=r"row 3 \(line in the file\), column Fecha-O: .* is 180 minutes before"
    ):
        load(write_csv(tmp_path / "f.csv", rows))


def test_a_malformed_or_non_utf8_file_is_a_one_line_data_error(tmp_path: Path) -> None:
    """Before: pandas' ParserError and UnicodeDecodeError escaped as tracebacks."""
    path = write_csv(tmp_path / "f.csv", synthetic_rows(5))
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[3] += ",extra"
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"not a well-formed CSV: .*line 4, saw 19"):
        load(ragged)
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes(path.read_text(encoding="utf-8").encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8 text"):
        load(latin1)


def test_a_gzip_cut_short_or_corrupt_is_a_one_line_data_error(tmp_path: Path) -> None:
    """A download cut short (or bytes flipped in it) was an EOFError or zlib.error traceback out
    of `make export`, `make model-slices` and the pipeline's prepare stage."""
    whole = write_csv(tmp_path / "whole.csv.gz", synthetic_rows(500)).read_bytes()
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match=r"^cannot read .*cut\.csv\.gz: .*end-of-stream"):
        load(cut)
    corrupt = tmp_path / "corrupt.csv.gz"
    corrupt.write_bytes(whole[:20] + bytes(b ^ 0xFF for b in whole[20:40]) + whole[40:])
    with pytest.raises(DataError, match=r"^cannot read .*corrupt\.csv\.gz: "):
        load(corrupt)


@pytest.mark.parametrize("refused", ["stat", "read_bytes"])
def test_a_data_file_that_cannot_be_read_is_a_one_line_data_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refused: str
) -> None:
    """Its permissions (or its directory's) refusing the look-up or the read: a PermissionError
    traceback before."""
    path = write_csv(tmp_path / "f.csv.gz", synthetic_rows(5))
    refuse_access(monkeypatch, path, refused)
    with pytest.raises(DataError, match=r"^cannot read .*f\.csv\.gz: Permission denied$"):
        load(path)


def test_bom_crlf_column_order_and_extra_columns_give_the_same_flights(tmp_path: Path) -> None:
    rows = synthetic_rows(50)
    original = load(write_csv(tmp_path / "a.csv", rows))
    columns = [*reversed(COLUMNS), "Extra"]
    other = write_csv(tmp_path / "b.csv", [row | {"Extra": "x"} for row in rows], columns)
    text = other.read_text(encoding="utf-8").replace("\n", "\r\n")
    other.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    changed = load(other)
    for schedule in (False, True):
        assert changed.flights(schedule) == original.flights(schedule)
    assert changed.labels.tolist() == original.labels.tolist()
