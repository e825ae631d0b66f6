"""Packaging of type information and the user-facing documentation."""
import inspect
import pathlib
import pydoc
import re
import sys
import typing

import pytest
from torch import nn

import rnn_ext

PKG_DIR = pathlib.Path(rnn_ext.__file__).resolve().parent
REPO = PKG_DIR.parent

LAYERS = [rnn_ext.LSTM, rnn_ext.GRU, rnn_ext.RNN]
CELLS = [rnn_ext.LSTMCell, rnn_ext.GRUCell, rnn_ext.RNNCell]

# a shape written as a tuple of the usual symbols: (L, N, H_in), (N, H_in), (D*num_layers, ...), ...
SHAPE = re.compile(r"\((?:L|N|D\*num_layers|H_in|H)\b[^()]*\)")


def test_py_typed_marker_shipped():
    marker = PKG_DIR / "py.typed"
    assert marker.is_file()
    # and declared as package data, so wheels and sdists carry it
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.search(r"\[tool\.setuptools\.package-data\][^\[]*rnn_ext\s*=\s*\[[^\]]*\"py\.typed\"", pyproject)


def test_public_api_listed_and_documented():
    for name in rnn_ext.__all__:
        obj = getattr(rnn_ext, name)  # every name in __all__ exists
        if name == "__version__":
            assert isinstance(obj, str) and obj
            continue
        doc = inspect.getdoc(obj)
        assert doc and len(doc) > 40, f"rnn_ext.{name} has no real docstring"
    assert set(rnn_ext.__all__) >= {"convert", "LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell"}


@pytest.mark.parametrize("cls", LAYERS, ids=lambda c: c.__name__)
def test_layer_docstring_documents_shapes(cls):
    doc = cls.__doc__ or ""
    assert f"torch.nn.{cls.__name__}" in doc  # says what it replaces
    assert "inputs" in doc.lower() and "output" in doc.lower()
    assert "h_n" in doc
    # the input/output shapes themselves, not only a reference elsewhere
    assert SHAPE.search(doc), f"{cls.__name__} docstring gives no tensor shapes"
    assert "(L, N" in doc or "(N, L" in doc, f"{cls.__name__} docstring does not give the batched input shape"


@pytest.mark.parametrize("cls", CELLS, ids=lambda c: c.__name__)
def test_cell_docstring_documents_shapes(cls):
    doc = cls.__doc__ or ""
    assert f"torch.nn.{cls.__name__}" in doc
    assert "Inputs" in doc and "Output" in doc
    assert "(N, H_in)" in doc and "(N, H)" in doc


def test_forward_docstrings_point_to_shapes():
    for cls in LAYERS:
        doc = inspect.getdoc(cls.forward)
        assert doc and "Returns" in doc and "h_n" in doc, cls.__name__


def test_convert_docstring_and_annotations():
    doc = inspect.getdoc(rnn_ext.convert)
    assert "Args:" in doc and "Returns:" in doc
    assert '"torch"' in doc and '"rnn_ext"' in doc
    assert "subclass" in doc.lower()  # the documented exact-type rule
    hints = typing.get_type_hints(rnn_ext.convert)
    assert hints == {"model": nn.Module, "to": str, "return": nn.Module}
    assert inspect.signature(rnn_ext.convert).parameters["to"].default == "rnn_ext"


@pytest.mark.parametrize("cls", CELLS, ids=lambda c: c.__name__)
def test_cell_forward_annotated(cls):
    hints = typing.get_type_hints(cls.forward)
    assert {"input", "hx", "return"} <= set(hints)


def test_help_lstm_is_substantial():
    text = pydoc.render_doc(rnn_ext.LSTM, renderer=pydoc.plaintext)
    assert len(text) > 3000
    for word in ("proj_size", "batch_first", "h_n", "c_n", "PackedSequence", "flatten_parameters"):
        assert word in text, word


def test_help_via_builtin_help(capsys):
    help(rnn_ext.LSTM)
    out = capsys.readouterr().out
    assert "class LSTM" in out and "proj_size" in out and "batch_first" in out and "h_n" in out
    assert len(out) > 3000


def test_module_docstrings():
    # rnn_ext.convert is the function; the module of the same name is in sys.modules
    for mod in (rnn_ext, rnn_ext.modules, sys.modules["rnn_ext.convert"], rnn_ext.functional):
        assert mod.__doc__ and len(mod.__doc__) > 80, mod.__name__
    assert "rnn_ext.convert" in rnn_ext.__doc__
