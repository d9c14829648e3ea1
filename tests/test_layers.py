"""Layer names, globs, suggestions, pooling and hook hygiene."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mammodissect.errors import MammodissectError
from mammodissect.hooks import StopForward, hooked, pool
from mammodissect.layers import list_layers, resolve_layers


class Tower(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 4, 3, padding=1)
        self._blocks = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()) for _ in range(12)]
        )
        self._head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._conv_stem(x)
        for block in self._blocks:
            x = block(x)
        return self._head(x.mean((2, 3)))


class Wrapped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.image_encoder = Tower()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.image_encoder(x)


@pytest.fixture()
def net() -> Wrapped:
    return Wrapped().eval()


def test_brackets_are_read_as_dots(net):
    assert resolve_layers(net, "image_encoder._blocks[3]") == ["image_encoder._blocks.3"]


def test_glob_stays_in_one_part_and_keeps_model_order_not_string_order(net):
    names = resolve_layers(net, "image_encoder._blocks.*")
    assert names == [f"image_encoder._blocks.{i}" for i in range(12)]  # 0, 1, 2, ..., 10, 11


def test_double_star_crosses_dots_and_classes_work(net):
    assert "image_encoder._blocks.3.0" in resolve_layers(net, "image_encoder._blocks.**")
    assert resolve_layers(net, "image_encoder._blocks.1[0-1]") == [
        "image_encoder._blocks.10",
        "image_encoder._blocks.11",
    ]


def test_comma_lists_are_deduplicated_and_ordered_by_model(net):
    names = resolve_layers(
        net, "image_encoder._head, image_encoder._blocks[2],image_encoder._blocks.2"
    )
    assert names == ["image_encoder._blocks.2", "image_encoder._head"]
    assert resolve_layers(net, ["image_encoder._head", "image_encoder._conv_stem"]) == [
        "image_encoder._conv_stem",
        "image_encoder._head",
    ]


def test_unknown_name_suggests_the_closest(net):
    with pytest.raises(MammodissectError) as err:
        resolve_layers(net, "image_encoder._block.3")
    assert "image_encoder._block.3" in str(err.value)
    assert "closest: image_encoder._blocks.3" in str(err.value)


def test_glob_matching_nothing_is_an_error(net):
    with pytest.raises(MammodissectError, match="matches no module"):
        resolve_layers(net, "encoder.*")


def test_no_layers_is_an_error(net):
    with pytest.raises(MammodissectError, match="no layers given"):
        resolve_layers(net, " , ")


def test_list_layers_reports_shapes_in_model_order(net):
    infos = list_layers(net, torch.zeros(1, 3, 8, 10))
    names = [i.name for i in infos]
    assert names.index("image_encoder._blocks.2") < names.index("image_encoder._blocks.10")
    by_name = {i.name: i for i in infos}
    assert by_name["image_encoder._blocks.5"].output_shape == (1, 4, 8, 10)
    assert by_name["image_encoder._blocks.5"].type == "Sequential"
    assert by_name["image_encoder._head"].output_shape == (1, 2)
    assert not net._forward_hooks and not net.image_encoder._head._forward_hooks


def test_pooling_known_answers():
    x = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2)
    assert torch.equal(pool(x, "mean"), x.mean((2, 3)))
    assert torch.equal(pool(x, "max"), x[:, :, 1, 1])
    tokens = torch.randn(2, 5, 7)
    assert torch.equal(pool(tokens, "cls"), tokens[:, 0])
    assert torch.allclose(pool(tokens, "mean"), tokens.mean(1))
    assert torch.equal(pool(tokens, "max"), tokens.max(1).values)
    flat = torch.randn(4, 6)
    assert torch.equal(pool(flat, "mean"), flat)
    with pytest.raises(MammodissectError, match="needs token outputs"):
        pool(x, "cls", "conv")
    with pytest.raises(MammodissectError, match="no unit axis"):
        pool(torch.randn(4), "mean", "vector")


def test_pooled_values_are_detached_float32():
    x = torch.randn(2, 3, 4, 4, requires_grad=True).half()
    out = pool(x, "mean")
    assert out.dtype == torch.float32 and not out.requires_grad


def _all_hooks(module: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in module.modules())


def test_hooks_removed_after_error_and_after_stop(net):
    layers = ["image_encoder._blocks.1", "image_encoder._blocks.4"]

    def boom(name, output):
        raise RuntimeError("failure inside the forward")

    with pytest.raises(RuntimeError), hooked(net, layers, boom):
        assert _all_hooks(net) == 2
        net(torch.zeros(1, 3, 4, 4))
    assert _all_hooks(net) == 0

    seen = []

    def stop(name, output):
        seen.append(name)
        if len(seen) == len(layers):
            raise StopForward

    with hooked(net, layers, stop), pytest.raises(StopForward):
        net(torch.zeros(1, 3, 4, 4))
    assert seen == layers and _all_hooks(net) == 0


def test_trace_keeps_first_calls_stops_after_the_last_layer_and_removes_its_hooks():
    import torch
    from torch import nn

    from mammodissect.errors import MammodissectError
    from mammodissect.hooks import Trace

    calls = {"tail": 0}

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(2, 3)
            self.b = nn.Identity()
            self.tail = nn.Linear(3, 1)

        def forward(self, x):
            first = self.a(x)
            self.a(x * 0)  # a second call of the same module: its first output is the one kept
            out = self.b(first)
            calls["tail"] += 1
            return self.tail(out)

    net = Net()
    x = torch.ones(4, 2)
    with Trace(net, ["a", "b"], reduce=lambda name, t: t.sum(1)) as trace:
        outputs = trace(x)
        assert calls["tail"] == 0  # stopped once a and b had fired
        assert torch.allclose(outputs["a"], net.a(x).sum(1).detach())
        trace(x)
        assert set(trace.outputs) == {"a", "b"}
    assert not net.a._forward_hooks and not net.b._forward_hooks  # removed on exit
    with Trace(net, ["a"], stop=False) as trace:
        net(x)
        assert calls["tail"] == 1 and set(trace.outputs) == {"a"}

    class NoTensor(nn.Module):
        def forward(self, x):
            return None

    holder = nn.Sequential(NoTensor())
    with Trace(holder, ["0"]) as trace:
        assert trace(x) == {}  # left out
    with (
        Trace(holder, ["0"], require=True) as trace,
        pytest.raises(MammodissectError, match="layer '0' returns no tensor"),
    ):
        trace(x)


def test_target_layers_measures_shapes_at_the_asked_size_and_filters() -> None:
    from mammodissect.target_layers import target_layers

    spec = "python:helpers_models:tiny_cnn?size=96x58"
    native = target_layers(spec)
    assert native.input_shape == (1, 3, 96, 58)
    resized = target_layers(spec, "features.3,features.6", image_size="40x32")
    assert resized.input_shape == (1, 3, 40, 32)
    assert [(i.name, i.output_shape) for i in resized.layers] == [
        ("features.3", (1, 16, 10, 8)),
        ("features.6", (1, 32, 5, 4)),
    ]
    lines = resized.table().splitlines()
    assert lines[0].startswith("layer") and lines[0].endswith("(input (1, 3, 40, 32))")
    assert lines[2].split() == ["features.6", "Conv2d", "1x32x5x4"]
    with pytest.raises(MammodissectError, match="featurs"):
        target_layers(spec, "featurs.*")
    from mammodissect.models import load_target

    loaded = load_target(spec)
    before = loaded.preprocess
    assert target_layers(loaded, image_size="40x32").input_shape == (1, 3, 40, 32)
    assert loaded.preprocess is before  # a loaded target is listed, not changed
