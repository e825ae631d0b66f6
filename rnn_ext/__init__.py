"""rnn_ext: fused C++/CUDA LSTM, GRU and RNN kernels behind drop-in torch.nn modules.

    import rnn_ext
    lstm = rnn_ext.LSTM(input_size, hidden_size, num_layers=2, batch_first=True)  # as nn.LSTM
    model = rnn_ext.convert(model)   # swap every torch.nn recurrent module in place
"""
import torch  # noqa: F401  (loads libtorch before the extension)

from . import _ops, flops, functional, reference  # noqa: F401  (_ops registers autograd and fake kernels, flops FLOP formulas)
from .convert import convert
from .modules import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell

__version__ = "0.1.0"
__all__ = ["convert", "LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell", "functional", "reference", "__version__"]
