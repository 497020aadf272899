"""The shared prologue and error tail of every command line (`python -m wss.X`, datasets/*).

One convention for all programs:

    FLAGS = program.flag_values()          # the tool's own flags, plus --traceback/--verbosity
    program.define_model_flags(FLAGS)      # flag groups tools share are defined here
                                           # (model, data, dataset builders)
    flags.DEFINE_string("output_dir", None, "...", flag_values=FLAGS)

    def main(argv=None):                   # tests call main([...]) and get its result
        if not program.parse_flags(FLAGS, argv):
            return None                    # --help was printed
        ...

    if __name__ == "__main__":
        program.run(main, FLAGS)

Each tool keeps its own FlagValues, so one process (a test session, `wss.compare`) can
import several tools without their flags clashing. `run` wraps absl's app.run: it parses
the flags, keeps absl's INFO lines out of the progress output (`--verbosity=0` brings them
back, `--verbosity=1` also TensorFlow's C++ log) and turns the project's own errors into
one line `error: <message>` on stderr with exit code 2. `--traceback` (or the environment
variable PSEUDOSEG_TRACEBACK=1) re-raises them with the full trace for bug reports.
TensorFlow's C++ start-up log is silenced when the `wss` package is imported (see
wss/__init__.py), which every program does before it imports TensorFlow.
"""

import logging as std_logging
import os
import re
import sys
import tokenize
import traceback as traceback_lib

import gin
import tensorflow as tf
from absl import app, flags, logging

from deeplab_ext.errors import DeepLabError
from wss import errors

TRACEBACK_ENV = "PSEUDOSEG_TRACEBACK"
UsageError = errors.UsageError  # a missing or contradictory flag: `error: ...`, exit 2
USAGE_EXIT_CODE = 2
# Errors that are not the project's own but name a user's file or path.
_PATH_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, tf.errors.NotFoundError)
# tf.data wraps an exception raised in a py_function into an OpError whose message holds
# the original as "<module>.<Class>: <message>" followed by TensorFlow's node names.
_WRAPPED = re.compile(r"(?:^|\s)(?:[\w.]+\.)?(\w+): (.*?)\s*(?:\n\s*\n|\n\s*\[\[|$)", re.S)
# The model library's errors (deeplab_ext never imports wss) are user errors by base class.
_USER_ERRORS = (errors.UserError, app.UsageError, DeepLabError) + _PATH_ERRORS
_GIN_DIR = os.path.dirname(gin.__file__)
_GIN_PARSE = ("parse_config", "bind_parameter")
# TensorFlow's own context in an OpError message: "{{function_node ...}}", "[[{{node x}}]]",
# "[Op:IteratorGetNext] name: ".
_TF_NOISE = re.compile(r"\{\{function_node [^}]*\}\}|\[\[.*?\]\]|\[Op:\w+\]( name: \S*)?", re.S)
# gin's note on an exception raised inside a configurable function.
_GIN_CALL_NOTE = re.compile(r"\s*In call to configurable '[^']*' \(<[^>]*>\)")
HELP_FLAGS = ("-h", "--help", "-?", "--helpfull", "--helpshort")


def flag_values():
    """A new FlagValues for one tool, holding the flags every program shares."""
    fv = flags.FlagValues()
    flags.DEFINE_bool(
        "traceback",
        False,
        f"On an error, show the full Python trace (for bug reports; also {TRACEBACK_ENV}=1).",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "verbosity",
        -1,
        "Log detail: -1 progress and warnings only, 0 also absl/TensorFlow INFO lines, "
        "1 also debug lines and TensorFlow's C++ log.",
        flag_values=fv,
    )
    return fv


def define_model_flags(fv):
    """The flags of a tool that reads a trained run: --gin_file, --gin_param, --model_dir,
    --checkpoint (their values, as wss.restore takes them: `model_flag_values`)."""
    flags.DEFINE_multi_string(
        "gin_file",
        [],
        "Gin file(s) of the experiment (default: MODEL_DIR/operative_config.gin).",
        flag_values=fv,
    )
    flags.DEFINE_multi_string("gin_param", [], "Extra gin bindings.", flag_values=fv)
    flags.DEFINE_string(
        "model_dir", None, "Training directory holding the checkpoints.", flag_values=fv
    )
    flags.DEFINE_string(
        "checkpoint", None, "Checkpoint prefix (default: latest in --model_dir).", flag_values=fv
    )


def define_data_flags(fv, split_help="Split to use (default: Experiment.eval_split)."):
    """The dataset flags of such a tool: --dataset_dir, --dataset_name, --split,
    --eval_crop_size, --batch_size (values: `data_flag_values` and fv.batch_size)."""
    flags.DEFINE_string(
        "dataset_dir",
        None,
        "Directory of the TFRecords (with "
        "--dataset_name=demo and no directory: ./demo_data, generated).",
        flag_values=fv,
    )
    flags.DEFINE_string(
        "dataset_name", None, "Dataset (default: Experiment.dataset_name).", flag_values=fv
    )
    flags.DEFINE_string("split", None, split_help, flag_values=fv)
    flags.DEFINE_integer(
        "eval_crop_size",
        None,
        "Pad size (default: the experiment's or the dataset's eval crop).",
        flag_values=fv,
    )
    flags.DEFINE_integer("batch_size", 4, "Images per batch.", flag_values=fv)


def define_builder_flags(fv, num_shards=4, output_help="Folder for the TFRecords.", resumable=True):
    """The flags every dataset builder (datasets/build_*_data.py) shares: --output_dir,
    --num_shards, --num_workers and, for `resumable` builders, --skip_bad and --resume."""
    flags.DEFINE_string("output_dir", None, output_help, flag_values=fv)
    flags.DEFINE_integer("num_shards", num_shards, "Shards per split.", flag_values=fv)
    flags.DEFINE_integer("num_workers", 0, "Worker processes (0 = all cores).", flag_values=fv)
    if resumable:
        flags.DEFINE_bool(
            "skip_bad", False, "Skip and report bad images instead of stopping.", flag_values=fv
        )
        flags.DEFINE_bool(
            "resume", False, "Keep shards already written by an earlier run.", flag_values=fv
        )


def model_flag_values(fv):
    """define_model_flags' values as the keyword arguments of wss.restore.parse_run and
    setup_tool."""
    return dict(
        model_dir=fv.model_dir,
        checkpoint=fv.checkpoint,
        gin_files=fv.gin_file,
        gin_params=fv.gin_param,
    )


def data_flag_values(fv):
    """define_data_flags' values (batch size aside) as the keyword arguments of
    wss.restore.setup_tool."""
    return dict(
        dataset_name=fv.dataset_name,
        dataset_dir=fv.dataset_dir,
        split=fv.split,
        eval_crop_size=fv.eval_crop_size,
    )


def parse_flags(fv, argv=None):
    """Parses argv into `fv`; prints the help and returns False for -h/--help.

    With argv None the flags `run` already parsed are kept (else sys.argv is parsed).
    """
    if argv is None and fv.is_parsed():
        return True
    argv = list(argv if argv is not None else sys.argv)
    if any(a in HELP_FLAGS for a in argv[1:]):
        print(fv.get_help())
        return False
    fv.unparse_flags()
    fv(argv)
    return True


def set_verbosity(level):
    """Python log level of absl and TensorFlow: -1 warnings, 0 info, 1 debug."""
    logging.set_verbosity(
        logging.WARNING if level < 0 else logging.INFO if level == 0 else logging.DEBUG
    )
    if level < 0:
        # Warnings read as short lines among the progress lines, without absl's prefix.
        logging.get_absl_handler().setFormatter(std_logging.Formatter("%(levelname)s: %(message)s"))


def user_message(exc):
    """The one-line message of a user error, or None for anything else (a bug)."""
    path_error = isinstance(exc, tf.errors.NotFoundError) or _is_path_op_error(exc)
    if isinstance(exc, tf.errors.OpError) and not path_error:
        return _unwrap_op_error(exc)
    if isinstance(exc, tf.errors.PermissionDeniedError):
        message = _TF_NOISE.sub("", exc.message) + errors.PERMISSION_FIX
    elif isinstance(exc, tf.errors.OpError):
        message = _TF_NOISE.sub("", exc.message)
    elif isinstance(exc, _USER_ERRORS):
        message = str(exc)
    elif _is_gin_config_error(exc):
        message = f"gin config: {exc}"
    else:
        return None
    return _one_line(_GIN_CALL_NOTE.sub("", message))


def run(main, fv):
    """Runs `main(None)` under absl's app.run with `fv` parsed from sys.argv (exit code 0;
    main's return value is for callers in Python, such as tests).

    Prints `error: <message>` and exits with code 2 for flag errors and the project's own
    errors (see user_message); other exceptions keep their traceback.
    """

    def parse(argv):
        flags.FLAGS(argv[:1])  # absl's own flags stay at their defaults
        doc = sys.modules["__main__"].__doc__
        if doc and any(a in HELP_FLAGS for a in argv[1:]):
            print(doc.strip() + "\n")
        try:
            if not parse_flags(fv, argv):
                sys.exit(0)
        except flags.Error as e:
            _fail(f"{e} (see --help)")
        return argv

    def guarded(argv):
        del argv
        set_verbosity(fv.verbosity)
        show_trace = fv.traceback or os.environ.get(TRACEBACK_ENV, "") not in ("", "0")
        try:
            main(None)
        except KeyboardInterrupt:
            sys.stdout.flush()
            print("interrupted (checkpoints already written are kept)", file=sys.stderr)
            sys.exit(130)
        except Exception as e:
            message = user_message(e)
            if message is None or show_trace:
                raise
            _fail(message)
        return 0

    app.run(guarded, flags_parser=parse)


def _fail(message):
    sys.stdout.flush()
    print(f"error: {message}", file=sys.stderr, flush=True)
    # os._exit, not sys.exit: after an error inside a tf.data pipeline, the interpreter's
    # shutdown can wait forever on the pipeline's threads (seen with py_function maps).
    # Everything a run keeps (checkpoints, the config) is already on disk.
    logging.flush()
    os._exit(USAGE_EXIT_CODE)


def _one_line(message):
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())


def _is_gin_config_error(exc):
    """A ValueError/SyntaxError/OSError raised while gin parsed files or bindings."""
    if not isinstance(exc, (ValueError, SyntaxError, OSError, tokenize.TokenError)):
        return False
    return any(
        frame.filename.startswith(_GIN_DIR) and frame.name.startswith(_GIN_PARSE)
        for frame in traceback_lib.extract_tb(exc.__traceback__)
    )


def _is_path_op_error(exc):
    """A TensorFlow file-system error on a user's path, raised outside wss.files (by a
    checkpoint, SavedModel or TFRecord op): no permission or an unknown URL scheme. Its
    message names the path."""
    if isinstance(exc, tf.errors.PermissionDeniedError):
        return True
    return isinstance(exc, tf.errors.UnimplementedError) and "File system scheme" in exc.message


def _unwrap_op_error(exc):
    """The project's message inside an input-pipeline OpError, or None."""
    names = {cls.__name__ for cls in _subclasses(errors.UserError)}
    for match in _WRAPPED.finditer(exc.message):
        if match.group(1) in names:
            return _one_line(match.group(2))
    return None


def _subclasses(cls):
    found = {cls}
    for sub in cls.__subclasses__():
        found |= _subclasses(sub)
    return found
