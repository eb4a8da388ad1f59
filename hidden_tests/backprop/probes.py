"""Probes for the backprop assignment. They run inside the student's process.

Each function gets the student's notebook namespace and inputs chosen by the grader, calls the
student's function, and returns plain data: tensors, numbers, strings. No expected values and no
verdicts live here; the hidden tests decide outside this process.
"""

import contextlib

import torch
from torch import nn, optim

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


def _mlp(sizes, activation, state):
    layers = []
    for index, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        if index:
            layers.append(ACTIVATIONS[activation]())
        layers.append(nn.Linear(fan_in, fan_out))
    model = nn.Sequential(*layers)
    model.load_state_dict(state)
    return model


def forward_backward(student, inputs):
    model = _mlp(inputs["sizes"], inputs["activation"], inputs["state"])
    loss = student["forward_backward"](model, inputs["x"].clone(), inputs["y_true"].clone())
    return {"loss": loss, "grads": {name: p.grad for name, p in model.named_parameters()}}


def chain_rule(student, inputs):
    with _counting_backpropagation() as calls:
        result = student["chain_rule"](inputs["x_value"])
    if not isinstance(result, tuple | list) or len(result) != 4:
        return {"returned": f"{type(result).__name__} of length {_length(result)}"}
    x, y, z, loss = result
    out = {"x": x, "y": y, "z": z, "loss": loss, "backpropagations": calls[0]}
    if isinstance(x, torch.Tensor):
        out["x_requires_grad"] = x.requires_grad
        out["x_grad"] = x.grad if x.is_leaf else None
        out["x_is_leaf"] = x.is_leaf
    if isinstance(loss, torch.Tensor):
        out["loss_has_graph"] = loss.grad_fn is not None
    return out


def train_step(student, inputs):
    model = nn.Linear(1, 1)
    model.load_state_dict(inputs["state"])
    for name, parameter in model.named_parameters():
        parameter.grad = inputs["stale_grads"][name].clone()  # left over from an earlier step
    optimizer = optim.SGD(model.parameters(), lr=inputs["lr"])
    loss = student["train_step"](model, optimizer, nn.MSELoss(), inputs["X"].clone(),
                                 inputs["y"].clone())
    return {
        "loss": loss,
        "params": {name: p.detach().clone() for name, p in model.named_parameters()},
        "grads": {name: p.grad for name, p in model.named_parameters()},
    }


def train(student, inputs):
    """The notebook's given train(), run here from a start the grader chose, so that only the
    student's train_step is used; the weights after every epoch come back (the path)."""
    model = nn.Linear(1, 1)
    model.load_state_dict(inputs["state"])
    optimizer = optim.SGD(model.parameters(), lr=inputs["lr"])
    criterion = nn.MSELoss()
    train_step = student["train_step"]
    path = []
    for _ in range(inputs["epochs"]):
        train_step(model, optimizer, criterion, inputs["X"].clone(), inputs["y"].clone())
        path.append(torch.cat([model.weight.detach().reshape(-1),
                               model.bias.detach().reshape(-1)]))
    return {"path": torch.stack(path) if path else torch.empty(0, 2)}


@contextlib.contextmanager
def _counting_backpropagation():
    """Count calls of torch.autograd.backward and .grad (loss.backward() goes through the
    first): tells a gradient PyTorch computed from one written by hand."""
    calls = [0]
    originals = torch.autograd.backward, torch.autograd.grad

    def counted(function):
        def wrapper(*args, **kwargs):
            calls[0] += 1
            return function(*args, **kwargs)
        return wrapper

    torch.autograd.backward, torch.autograd.grad = (counted(f) for f in originals)
    try:
        yield calls
    finally:
        torch.autograd.backward, torch.autograd.grad = originals


def _length(value):
    try:
        return len(value)
    except TypeError:
        return "none"
