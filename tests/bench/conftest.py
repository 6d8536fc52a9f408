"""bench/ holds scripts, not a package: each test module loads the script it pins by path."""
import importlib.util
import pathlib

BENCH_DIR = pathlib.Path(__file__).parents[2] / "bench"


def load_script(name: str):
    """bench/<name>.py as a module."""
    spec = importlib.util.spec_from_file_location(name, BENCH_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
