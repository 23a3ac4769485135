"""Fixtures of the decoder tests (helpers in decoder_cases.py)."""
import pytest

from decoder_cases import KINDS, make_decoder


@pytest.fixture(params=KINDS)
def decoder(request):
    return make_decoder(request.param)
