"""Property-based: any value of any key, through --set, an INI file or a flag, loads or is one SettingsError line.

In-process calls of the parser (no subprocess, nothing written), with a modest number of examples each.
"""

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from configs.settings import SCHEMA, Settings, SettingsError, parse_command_line

KEYS = [(section, key) for section, keys in SCHEMA.items() for key in keys]
NAMES = re.compile("|".join(re.escape(f"{s}.{k}") for s, k in KEYS))
# database=None: no .hypothesis/ folder in the clone; derandomize: the same examples on every run (CI).
FUZZ = settings(max_examples=80, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])

# Random text, plus near-misses of every kind the schema parses (ints, floats, bools, lists, paths, depths).
TRICKY = ["", " ", "0", "-1", "1.5", "1e309", "-1e309", "nan", "inf", "-inf", "1_000", "0x10", "4294967296",
          "9" * 5000, "true", "no", "maybe", "auto", "AUTO", "0,,3", "3,-1", "~", "~no-such-user-dd3d/x", "/",
          "/dev/null", "a\x00b", "\udcff", "seed", "convnet", "me-convnet", "cuda", "é", "\u00a0", "x/y", "\t\n"]
values = st.one_of(st.text(max_size=30), st.sampled_from(TRICKY), st.integers().map(str),
                   st.floats(allow_nan=True, allow_infinity=True).map(repr))


def loads_or_one_line(argv: list[str]) -> str | None:
    """Parse; return None when it loaded, the message when it was refused (checked to be one line)."""
    try:
        loaded, _ = parse_command_line(argv)
    except SettingsError as e:
        message = str(e)
        assert message and "\n" not in message and "\r" not in message, message
        return message
    assert isinstance(loaded, Settings)
    return None


@FUZZ
@given(key=st.sampled_from(KEYS), value=values)
def test_any_value_of_any_key_via_set(key, value):
    section, name = key
    message = loads_or_one_line(["--set", f"{section}.{name}={value}"])
    if message is not None:
        # A conversion error names this key; a rule across keys (e.g. convnet needs splat) names one of them.
        assert NAMES.search(message), message
        if "is not a valid" in message or "NUL" in message:
            assert f"{section}.{name} = " in message


@FUZZ
@given(key=st.sampled_from(KEYS), value=values.map(lambda v: v.replace("\n", " ").replace("\r", " ")))
def test_any_value_of_any_key_in_an_ini_file(tmp_path_factory, key, value):
    section, name = key
    cfg = tmp_path_factory.mktemp("ini") / "fuzz.ini"
    cfg.write_text(f"[{section}]\n{name} = {value}\n", encoding="utf-8", errors="surrogateescape")
    message = loads_or_one_line(["--config", str(cfg)])
    if message is not None:
        assert NAMES.search(message) or str(cfg) in message, message


@FUZZ
@given(content=st.one_of(st.binary(max_size=300),
                         st.text(alphabet="[]=:;#\n \tMODELDISTILaxn0_1.", max_size=120)))
def test_any_ini_file_loads_or_is_one_line(tmp_path_factory, content):
    cfg = tmp_path_factory.mktemp("ini") / "random.ini"
    cfg.write_bytes(content if isinstance(content, bytes) else content.encode())
    loads_or_one_line(["--config", str(cfg)])


FLAGS_WITH_VALUES = ["--seed", "--iterations", "--clouds-per-class", "--depth", "--eval-models", "--eval-epochs",
                     "--device", "--distance", "--network", "--exp", "--config", "--set"]


@FUZZ
@given(flag=st.sampled_from(FLAGS_WITH_VALUES),
       # argv cannot carry a NUL byte, so neither does this
       value=values.filter(lambda v: "\x00" not in v))
def test_any_flag_value_loads_or_is_one_line(flag, value):
    message = loads_or_one_line([f"{flag}={value}"])
    if message is not None and flag not in ("--set", "--config"):
        assert flag in message or NAMES.search(message), message


@FUZZ
@given(argv=st.lists(st.sampled_from(["--seed", "1", "--iterations", "--pytorch", "--no-pytorch", "--resume", "x",
                                      "--eval-only", "--baseline", "random-real", "--iteration", "-x", "--", "--set",
                                      "MODEL.x=1", "--log", "--no-log", "--depth", "7"]), max_size=6))
def test_any_sequence_of_flags_loads_or_is_one_line(argv):
    loads_or_one_line(argv)


@pytest.mark.parametrize("content, fragment", [
    (b"[MODEL]\nbatch_size = 3\nbatch_size = 4\n", "malformed config"),  # duplicate key
    (b"[MODEL]\nbatch_size = 3\n[MODEL]\ndist_lr = 1\n", "malformed config"),  # duplicate section
    (b"[SHAPES]\nx = 1\n", "unknown section [SHAPES]"),
    (b"[MODEL]\ndist_lr = 0.1\xff\n", "is not UTF-8 text (byte 0xff on line 2)"),
    (b"batch_size = 3\n", "malformed config"),  # a key before any section
    (b"[MODEL]\ndist_lr = nan\n", "MODEL.dist_lr = 'nan' is not a valid finite float"),
    (b"[DEFAULT]\nseed = 4294967296\n", "DEFAULT.seed = 4294967296 is out of range"),
    (b"[DEFAULT]\nlogging_parent = runs\x00x\n", "DEFAULT.logging_parent = 'runs\\x00x' contains a NUL"),
    (b"[DEFAULT]\nlogging_parent = ~no-such-user-dd3d/runs\n", "DEFAULT.logging_parent = '~no-such-user-dd3d/runs'"),
    (b"[DEFAULT]\nexperiment_name = a\tb\n", "DEFAULT.experiment_name = 'a\\tb' is out of range"),
])
def test_bad_ini_files_name_the_problem(tmp_path, content, fragment):
    cfg = tmp_path / "bad.ini"
    cfg.write_bytes(content)
    message = loads_or_one_line(["--config", str(cfg)])
    assert message is not None and fragment in message, message


def test_a_config_path_that_is_a_folder(tmp_path):
    assert loads_or_one_line(["--config", str(tmp_path)]) == f"cannot read config {tmp_path}: Is a directory"


@pytest.mark.parametrize("argv, fragment", [
    (["--iteration", "3"], "unrecognized arguments: --iteration 3"),
    (["--iterations"], "argument --iterations: expected one argument"),
    (["--iterations", "x"], "argument --iterations: invalid int value: 'x'"),
    (["--resume", "a", "--eval-only", "b"], "not allowed with argument"),
])
def test_bad_flags_are_one_line_not_usage(argv, fragment):
    message = loads_or_one_line(argv)
    assert message is not None and fragment in message and message.endswith("(see --help)"), message
