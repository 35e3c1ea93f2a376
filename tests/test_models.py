"""Encoders: the pooled sequence encoder and the choice of sequence encoder."""
import pytest
import torch

from mmlib.models import LSTMEncoder, PooledEncoder, encode, make_encoder


def test_pooled_encoder_is_mean_and_std_over_valid_frames():
    torch.manual_seed(0)
    enc = PooledEncoder(3, 8, 4).eval()
    x = torch.randn(2, 5, 3)
    lengths = torch.tensor([5, 2])
    with torch.no_grad():
        out = enc(x, lengths)
        for i, T in enumerate(lengths.tolist()):
            v = x[i, :T]
            feats = torch.cat([v.mean(0), (v.var(0, unbiased=False) + 1e-6).sqrt()])
            assert torch.allclose(out[i], torch.relu(enc.mlp(feats[None]))[0], atol=1e-6)
        # padding frames beyond the length change nothing
        y = x.clone()
        y[1, 2:] = 99.0
        assert torch.allclose(enc(y, lengths), out)


def test_make_encoder_sequence_choice():
    assert isinstance(make_encoder((50, 14)), PooledEncoder)
    assert isinstance(make_encoder((50, 14), sequence="lstm"), LSTMEncoder)
    with pytest.raises(ValueError, match="unknown sequence encoder 'gru'"):
        make_encoder((50, 14), sequence="gru")
    lstm = make_encoder((6, 2), 4, sequence="lstm").eval()
    x = torch.randn(1, 3, 2)
    with torch.no_grad():
        padded = torch.cat([x, torch.zeros(1, 3, 2)], 1)
        assert torch.allclose(encode(lstm, padded, torch.tensor([3])), lstm(x), atol=1e-6)
