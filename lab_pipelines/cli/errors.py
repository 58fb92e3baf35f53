"""The one error a `lab` subcommand raises for input the user must fix."""


class LabInputError(Exception):
    """Something the command needs is missing or wrong; the message is one line that says
    what, and which `make` or `dagster asset materialize` command builds it."""


def materialize_hint(select: str) -> str:
    """The command that builds `select`, as a user would paste it."""
    return (f"DAGSTER_HOME=$PWD/.dagster_home .venv/bin/dagster asset materialize "
            f"-m assets_defs.definitions --select '{select}'")
