"""Hidden tests for the backprop assignment. Trusted side only.

This file is never copied to release/, never put in feedback, and never imported in the student's
process. References are computed here independently of the student's code: gradients of the
networks by hand-written backpropagation (no autograd), the SGD step by its formula.
Assertion messages show the student's values and name the mistake, never the expected values.
"""

import torch
from torch import nn

from autograder.verify import as_number, as_tensor, close, hidden_test, probe

# Part 3's settings, as the notebook states them.
LR, TOLERANCE = 0.1, 0.01
LESSON_X = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
# The notebook needs 300 epochs from a random start because the loss of y = 2x on X = 1..4 is
# badly conditioned (curvatures 16.7 and 0.3). The hidden run starts one unit from (2, 0) along
# the steep direction instead: a correct train_step lands within 1e-5 in 40 epochs, every
# mistaken one we know stays 0.5 or more away, and grading spends 40 epochs, not 300.
LESSON_START = {"weight": torch.tensor([[2.9467]]), "bias": torch.tensor([0.3220])}
LESSON_EPOCHS = 40


# ---------------------------------------------------------------- inputs (sent to the student)

def _lesson_network():
    with torch.random.fork_rng():
        torch.manual_seed(0)  # the notebook's network in Part 1
        model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    state = {name: value.detach().clone() for name, value in model.state_dict().items()}
    return probe("forward_backward", sizes=[2, 3, 1], activation="relu", state=state,
                 x=torch.tensor([[1.0, 2.0]]), y_true=torch.tensor([[5.0]]))


def _random_network(seed, sizes, activation):
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for index, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        state[f"{2 * index}.weight"] = torch.randn(fan_out, fan_in, generator=generator) * 0.8
        state[f"{2 * index}.bias"] = torch.randn(fan_out, generator=generator) * 0.5
    x = torch.randn(1, sizes[0], generator=generator)
    y_true = torch.randn(1, sizes[-1], generator=generator) * 3
    return probe("forward_backward", sizes=sizes, activation=activation, state=state, x=x,
                 y_true=y_true)


UNSEEN_X_VALUES = (3.0, -1.5, 0.5)
# A line the student has not seen, on centred inputs: well conditioned (curvatures 2.5 and 2),
# so a step at lr 0.3 keeps at most 40 % of the error, and 20 epochs leave below 1e-6 of it.
UNSEEN_LINE_X = torch.tensor([[-1.5], [-0.5], [0.5], [1.5]])
UNSEEN_LINE_EPOCHS, UNSEEN_LINE_LR = 20, 0.3

STEP = probe(
    "train_step",
    state={"weight": torch.tensor([[0.3]]), "bias": torch.tensor([-0.5])},
    stale_grads={"weight": torch.tensor([[1.7]]), "bias": torch.tensor([-0.9])},
    lr=0.1,
    X=torch.tensor([[0.5], [1.5], [-1.0]]),
    y=torch.tensor([[1.0], [2.0], [-0.5]]),
)

PROBES = {
    "fb_lesson": _lesson_network(),
    "fb_tanh": _random_network(11, [3, 4, 1], "tanh"),
    "fb_deep_relu": _random_network(12, [4, 6, 5, 1], "relu"),
    "cr_lesson": probe("chain_rule", x_value=2.0),
    **{f"cr_unseen_{i}": probe("chain_rule", x_value=x) for i, x in enumerate(UNSEEN_X_VALUES)},
    "step_stale": STEP,
    "train_lesson": probe("train", X=LESSON_X, y=2 * LESSON_X, epochs=LESSON_EPOCHS, lr=LR,
                          seed=0, state=LESSON_START),
    "train_unseen_line": probe("train", X=UNSEEN_LINE_X, y=-3 * UNSEEN_LINE_X + 1,
                               epochs=UNSEEN_LINE_EPOCHS, lr=UNSEEN_LINE_LR, seed=5),
}


# ---------------------------------------------------------------- references (trusted only)

_DERIVATIVES = {
    "relu": (torch.relu, lambda z: (z > 0).to(z.dtype)),
    "tanh": (torch.tanh, lambda z: 1 - torch.tanh(z) ** 2),
    "sigmoid": (torch.sigmoid, lambda z: torch.sigmoid(z) * (1 - torch.sigmoid(z))),
}


def reference_mlp(inputs):
    """Loss and parameter gradients by hand-written backpropagation, in float64."""
    activate, derivative = _DERIVATIVES[inputs["activation"]]
    layers = len(inputs["sizes"]) - 1
    weights = [inputs["state"][f"{2 * i}.weight"].double() for i in range(layers)]
    biases = [inputs["state"][f"{2 * i}.bias"].double() for i in range(layers)]
    layer_inputs, pre_activations = [], []
    a = inputs["x"].double()
    for i in range(layers):
        layer_inputs.append(a)
        z = a @ weights[i].T + biases[i]
        pre_activations.append(z)
        a = z if i == layers - 1 else activate(z)
    residual = a - inputs["y_true"].double()
    delta = 2 * residual  # d loss / d output for loss = residual ** 2
    grads = {}
    for i in reversed(range(layers)):
        if i < layers - 1:
            delta = delta * derivative(pre_activations[i])
        grads[f"{2 * i}.weight"] = delta.T @ layer_inputs[i]
        grads[f"{2 * i}.bias"] = delta.sum(0)
        delta = delta @ weights[i]
    return (residual**2).sum(), grads


def chain_rule_gradient(x):
    return 4 * x * (x**2 + 3)


def _mse_gradients(inputs):
    w, b = inputs["state"]["weight"].double(), inputs["state"]["bias"].double()
    X, y = inputs["X"].double(), inputs["y"].double()
    residual = X @ w.T + b - y
    return {"weight": 2 * (residual * X).mean().reshape(1, 1),
            "bias": 2 * residual.mean().reshape(1)}


def step_outcomes(inputs):
    """Parameters after one train_step, done right and done in each classic wrong way."""
    lr, fresh = inputs["lr"], _mse_gradients(inputs)
    start = {name: value.double() for name, value in inputs["state"].items()}
    stale = {name: value.double() for name, value in inputs["stale_grads"].items()}
    return {
        "right": {n: start[n] - lr * fresh[n] for n in start},
        "accumulated": {n: start[n] - lr * (stale[n] + fresh[n]) for n in start},
        "unchanged": start,
        "stale": {n: start[n] - lr * stale[n] for n in start},
        "twice": {n: start[n] - 2 * lr * fresh[n] for n in start},
    }, fresh, stale


# ---------------------------------------------------------------- Part 1: forward_backward

def _check_gradients(out, inputs, network):
    grads = out["grads"]
    _, expected = reference_mlp(inputs)
    missing = [name for name in expected if grads.get(name) is None]
    assert len(missing) < len(expected), (
        f"For {network}, every parameter's .grad is still None after forward_backward")
    assert not missing, f"For {network}, {', '.join(missing)} got no gradient"
    wrong = []
    for name, reference in expected.items():
        got = as_tensor(grads[name], f"the gradient of {name}")
        assert got.shape == reference.shape, (
            f"For {network}, the gradient of {name} has shape {tuple(got.shape)}, "
            f"but {name} itself has shape {tuple(reference.shape)}")
        if not close(got, reference):
            wrong.append(name)
    if not wrong:
        return
    if all(close(as_tensor(grads[n], n), 2 * expected[n]) for n in expected):
        raise AssertionError(f"For {network}, every gradient is twice what backpropagation gives: "
                             "was loss.backward() called twice, or the loss doubled?")
    raise AssertionError(f"For {network}, the gradients of {', '.join(wrong)} are not those of "
                         "the squared error (y_pred - y_true) ** 2")


@hidden_test(cell="check_forward_backward", points=1,
             message="forward_backward should compute y_pred = model(x), the loss "
                     "(y_pred - y_true) ** 2, and call loss.backward() once.")
def lesson_network_gradients(probes):
    """Gradients of the lesson's network"""
    _check_gradients(probes["fb_lesson"], PROBES["fb_lesson"].inputs, "the lesson's network")


@hidden_test(cell="check_forward_backward", points=1,
             message="Use the model, x and y_true you are given: nothing in forward_backward "
                     "should depend on the lesson's network or its sizes.")
def unseen_network_gradients(probes):
    """Gradients of networks you have not seen (tanh; three layers)"""
    _check_gradients(probes["fb_tanh"], PROBES["fb_tanh"].inputs, "a 3-4-1 tanh network")
    _check_gradients(probes["fb_deep_relu"], PROBES["fb_deep_relu"].inputs,
                     "a 4-6-5-1 ReLU network")


@hidden_test(cell="check_forward_backward", points=1,
             message="forward_backward should return the loss tensor it called backward() on.")
def returns_the_loss(probes):
    """forward_backward returns the squared-error loss"""
    for name in ("fb_lesson", "fb_tanh", "fb_deep_relu"):
        loss = probes[name]["loss"]
        assert loss is not None, "forward_backward returned None"
        got = as_number(loss, "the returned loss")
        reference, _ = reference_mlp(PROBES[name].inputs)
        assert close(got, reference), f"It returned a loss of {got:.6g}, which is not the " \
                                      "squared error of this prediction"


# ---------------------------------------------------------------- Part 2: chain_rule

def _chain_rule_gradient(out, x_value):
    assert "returned" not in out, (f"chain_rule({x_value}) returned a {out.get('returned')}, "
                                   "not the four values (x, y, z, loss)")
    if out.get("x_requires_grad") is False:
        raise AssertionError("x was created without requires_grad=True, so PyTorch did not "
                             "track it and x.grad stays None")
    assert out.get("x_is_leaf", True), ("x should be the tensor you created with "
                                        "requires_grad=True, not a result computed from it")
    assert out.get("x_grad") is not None, (f"After chain_rule({x_value}), x.grad is None: "
                                           "call loss.backward()")
    return as_number(out["x_grad"], "x.grad")


def _require_backpropagation(out, x_value):
    calls = as_number(out.get("backpropagations", 0), "the number of backward passes")
    assert calls > 0, (f"chain_rule({x_value}) set x.grad without ever calling "
                       "loss.backward(): the point is to let PyTorch compute it")


@hidden_test(cell="check_chain_rule", points=1,
             message="dloss/dx = dloss/dz * dz/dy * dy/dx = 2z * 1 * 2x: let loss.backward() "
                     "compute it for you.")
def gradient_at_two(probes):
    """dloss/dx at x = 2"""
    got = _chain_rule_gradient(probes["cr_lesson"], 2.0)
    _require_backpropagation(probes["cr_lesson"], 2.0)
    assert close(got, chain_rule_gradient(2.0)), f"At x = 2.0 your x.grad is {got:g}"


@hidden_test(cell="check_chain_rule", points=1,
             message="Build the graph step by step from x: y = x ** 2, z = y + 3, loss = z ** 2.")
def graph_values(probes):
    """x, y, z and loss follow the lesson's three steps"""
    out = probes["cr_lesson"]
    assert "returned" not in out, (f"chain_rule(2.0) returned a {out.get('returned')}, "
                                   "not the four values (x, y, z, loss)")
    x = as_number(out["x"], "x")
    assert close(x, 2.0), f"chain_rule(2.0) returned x = {x:g}: x should hold x_value"
    for name, rule, value in (("y", "y = x ** 2", 4.0), ("z", "z = y + 3", 7.0),
                              ("loss", "loss = z ** 2", 49.0)):
        got = as_number(out[name], name)
        assert close(got, value), f"At x = 2.0 your {name} is {got:g}; check {rule}"
    assert out.get("loss_has_graph", False), (
        "loss does not come from a computation on x (it has no grad_fn): compute it from x "
        "with tensor operations")


@hidden_test(cell="check_chain_rule", points=1,
             message="x.grad must come from loss.backward() on the graph built from x_value, "
                     "so that it is right for any x.")
def gradient_at_unseen_inputs(probes):
    """dloss/dx at values of x you have not seen"""
    gots = {x: _chain_rule_gradient(probes[f"cr_unseen_{i}"], x)
            for i, x in enumerate(UNSEEN_X_VALUES)}
    if all(close(got, 56.0) for got in gots.values()):
        raise AssertionError("x.grad is 56 whatever x is: it looks written by hand "
                             "(x.grad = 56) rather than computed by loss.backward()")
    for i, (x, got) in enumerate(gots.items()):
        _require_backpropagation(probes[f"cr_unseen_{i}"], x)
        assert close(got, chain_rule_gradient(x)), f"At x = {x:g} your x.grad is {got:g}"


# ---------------------------------------------------------------- Part 3: train_step, train

ORDER_MISTAKES = {
    "accumulated": "The update used this step's gradients plus the ones left over from before: "
                   "PyTorch adds to .grad, so call optimizer.zero_grad() before loss.backward()",
    "stale": "The update used the gradients left over from an earlier step: call "
             "optimizer.step() after loss.backward(), which computes this step's gradients",
    "twice": "The weights moved twice as far as one SGD step: call optimizer.step() once",
}


@hidden_test(cell="check_train", points=2,
             message="One step is: pred = model(X); loss = criterion(pred, y); "
                     "optimizer.zero_grad(); loss.backward(); optimizer.step().")
def one_step_from_stale_gradients(probes):
    """One train_step, starting with gradients left over from an earlier step"""
    out = probes["step_stale"]
    outcomes, fresh, _ = step_outcomes(PROBES["step_stale"].inputs)
    params = {name: as_tensor(out["params"].get(name), f"model.{name}") for name in fresh}
    matches = [kind for kind, expected in outcomes.items()
               if all(close(params[n], expected[n], rtol=1e-4, atol=1e-6) for n in params)]
    if "right" in matches:
        return
    if "unchanged" in matches:
        grads = out["grads"]
        computed = all(grads.get(n) is not None and close(as_tensor(grads[n], n), fresh[n])
                       for n in fresh)
        if computed:
            raise AssertionError("The weights did not move although loss.backward() computed "
                                 "gradients: call optimizer.step() after loss.backward(), "
                                 "not before it")
        raise AssertionError("The weights did not move and no gradients were left to use: call "
                             "loss.backward() after optimizer.zero_grad() and before "
                             "optimizer.step()")
    if "accumulated" in matches and all(_cleared(out["grads"].get(n)) for n in fresh):
        raise AssertionError("The update used the gradients left over from before train_step "
                             "was called, which your code clears only after the step: call "
                             "optimizer.zero_grad() before loss.backward(), not after step()")
    for kind in matches:
        raise AssertionError(ORDER_MISTAKES[kind])
    raise AssertionError("After one train_step the weights are not where one SGD step on this "
                         "batch's loss puts them")


def _cleared(grad):
    return grad is None or (type(grad) is torch.Tensor and not bool(grad.any()))


def _check_fit(out, slope, intercept, what):
    weight = as_number(out["weight"], "the learned weight")
    bias = as_number(out["bias"], "the learned bias")
    assert abs(weight - slope) < TOLERANCE and abs(bias - intercept) < TOLERANCE, (
        f"{what}, the learned weight is {weight:.4f} and the bias {bias:.4f}: "
        f"not within {TOLERANCE} of the line")


@hidden_test(cell="check_train", points=1,
             message="train() calls your train_step once per epoch: with the five calls in the "
                     "right order it reaches weight 2.0 from any starting point.")
def trained_weight_near_two(probes):
    """Training on y = 2x ends within 0.01 of weight 2.0, bias 0.0"""
    _check_fit(probes["train_lesson"], 2.0, 0.0,
               "Trained on y = 2x from weight 2.9467, bias 0.3220")


@hidden_test(cell="check_train", points=1,
             message="Nothing in train_step should assume the data is y = 2x.")
def fits_an_unseen_line(probes):
    """Training fits a line you have not seen"""
    _check_fit(probes["train_unseen_line"], -3.0, 1.0, "Trained on another line")
