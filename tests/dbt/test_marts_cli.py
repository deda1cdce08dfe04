"""The marts' command line: an SQL shell on the encrypted marts and the BI connection statements."""

from __future__ import annotations

import argparse
import io

import pytest

from infra import marts_commands
from tests.dbt.conftest import BuiltLake


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="carelake")
    marts_commands.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


@pytest.fixture
def sample_environment(sample: BuiltLake, monkeypatch: pytest.MonkeyPatch) -> BuiltLake:
    monkeypatch.setenv("CARELAKE_LAKE__DATA_DIR", str(sample.lake.data_dir))
    monkeypatch.setenv("CARELAKE_KEYS__KEY_DIR", str(sample.lake.settings.key_dir))
    return sample


def test_sql_command_runs_one_query(sample_environment: BuiltLake) -> None:
    out = io.StringIO()
    args = _parse(["sql", "-c", "select count(*) as patients from patients"])

    assert args.handler(args, out=out) == 0
    assert out.getvalue() == "patients\n53\n(1 row)\n"


def test_sql_shell_reads_statements_and_survives_errors(sample_environment: BuiltLake) -> None:
    out = io.StringIO()
    stdin = io.StringIO(
        "select gender, count(*) as n\nfrom patients group by gender order by gender;\n"
        "select nothing from nowhere;\n"
        "delete from patients;\n"
        "select count(*) as n from patients;\n"
    )
    args = _parse(["sql"])

    assert args.handler(args, stdin=stdin, out=out) == 0
    lines = out.getvalue().splitlines()
    assert lines[1:5] == ["gender | n", "female | 27", "male | 26", "(2 rows)"]
    assert lines[5].startswith("error: CatalogException")
    assert lines[6].startswith("error: InvalidInputException")  # read-only: nothing deleted
    assert lines[7:] == ["n", "53", "(1 row)"]


def test_connect_sql_prints_a_read_only_attach(sample_environment: BuiltLake, capsys) -> None:
    args = _parse(["marts", "connect-sql"])

    assert args.handler(args) == 0
    attach = [line for line in capsys.readouterr().out.splitlines() if line.startswith("ATTACH")]
    assert len(attach) == 1
    assert attach[0].endswith(", READ_ONLY);")
    assert "/marts/marts.duckdb' AS marts (ENCRYPTION_KEY '" in attach[0]
