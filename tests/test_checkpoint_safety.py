"""weights_only loading of mmengine checkpoints: allowed exactly, nothing more."""
import io

import numpy as np
import pytest
import torch
from mmengine.logging import MessageHub

import mmkd  # noqa: F401  installs the allow-list


def _roundtrip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_message_hub_state_loads_with_weights_only():
    hub = MessageHub.get_instance('mmkd-test-ckpt')
    hub.update_scalar('train/loss', 1.5)
    hub.update_scalar('train/loss', np.float64(2.5))
    hub.update_info('best', np.float32(0.3))
    state = _roundtrip(dict(message_hub=hub.state_dict(),
                            meta=dict(seed=np.int64(3), arr=np.arange(3))))
    buf = state['message_hub']['log_scalars']['train/loss']
    assert buf.mean() == pytest.approx(2.0)
    assert buf.statistics('max') == 2.5  # statistics methods restored
    assert state['meta']['arr'].tolist() == [0, 1, 2]


class _GetattrPayload:
    def __reduce__(self):
        return (getattr, (np.ndarray, 'tofile'))


class _EvalPayload:
    def __reduce__(self):
        return (eval, ('1+1', ))


@pytest.mark.parametrize('payload', [_GetattrPayload(), _EvalPayload()])
def test_other_globals_stay_forbidden(payload):
    with pytest.raises(Exception) as err:
        _roundtrip({'x': payload})
    assert 'refusing getattr' in str(err.value) or 'Unsupported global' in str(err.value)
