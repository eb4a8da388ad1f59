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
# badly conditioned (curvatures 16.7 and 0.3). The hidden run starts along the steep direction
# from (2, 0) instead, at a distance drawn per submission: a correct train_step lands within
# 1e-5 in 40 epochs, every mistaken one we know stays far away, and grading spends 40 epochs.
STEEP = torch.tensor([0.9467, 0.3220])  # one unit along the steep direction, roughly
LESSON_EPOCHS = 40


# ---------------------------------------------------------------- inputs (sent to the student)

def _lesson_network(x=(1.0, 2.0), y_true=5.0):
    with torch.random.fork_rng():
        torch.manual_seed(0)  # the notebook's network in Part 1
        model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    state = {name: value.detach().clone() for name, value in model.state_dict().items()}
    return probe("forward_backward", sizes=[2, 3, 1], activation="relu", state=state,
                 x=torch.tensor([list(x)]), y_true=torch.tensor([[y_true]]))


def _random_network(rng, sizes, activation):
    state = {}
    for index, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        state[f"{2 * index}.weight"] = torch.randn(fan_out, fan_in, generator=rng) * 0.8
        state[f"{2 * index}.bias"] = torch.randn(fan_out, generator=rng) * 0.5
    x = torch.randn(1, sizes[0], generator=rng)
    y_true = torch.randn(1, sizes[-1], generator=rng) * 3
    return probe("forward_backward", sizes=sizes, activation=activation, state=state, x=x,
                 y_true=y_true)


def _uniform(rng, low, high):
    return low + (high - low) * float(torch.rand((), generator=rng))


def _unseen_x(rng, count=3):
    """Values of x for chain_rule: 0.5 to 3 either side of 0, never near the lesson's 2."""
    values = []
    while len(values) < count:
        x = round(_uniform(rng, 0.5, 3.0) * _sign(rng), 2)
        if abs(x - 2.0) > 0.25 and all(abs(x - other) > 0.25 for other in values):
            values.append(x)
    return values


# A line the student has not seen, on centred inputs: well conditioned (curvatures 2.5 and 2),
# so a step at lr 0.3 keeps at most 40 % of the error, and 20 epochs leave below 1e-6 of it.
UNSEEN_LINE_X = torch.tensor([[-1.5], [-0.5], [0.5], [1.5]])
UNSEEN_LINE_EPOCHS, UNSEEN_LINE_LR = 20, 0.3

def _sign(rng):
    return 1 if float(torch.rand((), generator=rng)) < 0.5 else -1


def draw_probes(rng):
    """Inputs drawn for each submission from the course's secret and the notebook's hash.
    The lesson's own values (its network, x = 2, y = 2x) are public, so each is judged with a
    neighbour drawn here too: an answer copied for the lesson's values fails there."""
    slope = round(_uniform(rng, 1.0, 3.5) * _sign(rng), 2)
    intercept = round(_uniform(rng, -2.0, 2.0), 2)
    near_two = round(2.0 + _uniform(rng, 0.05, 0.2) * _sign(rng), 3)
    lesson_x = tuple(round(v + _uniform(rng, 0.1, 0.4) * _sign(rng), 2) for v in (1.0, 2.0))
    along = _uniform(rng, 0.6, 1.4) * _sign(rng)
    start = {"weight": torch.tensor([[2.0 + along * float(STEEP[0])]]),
             "bias": torch.tensor([along * float(STEEP[1])])}
    return {
        "fb_lesson": _lesson_network(),
        "fb_lesson_near": _lesson_network(lesson_x, round(5.0 + _uniform(rng, -1, 1), 2)),
        "cr_lesson": probe("chain_rule", x_value=2.0),
        "cr_near": probe("chain_rule", x_value=near_two),
        "train_lesson": probe("train", X=LESSON_X, y=2 * LESSON_X, epochs=LESSON_EPOCHS, lr=LR,
                              state=start),
        "fb_tanh": _random_network(rng, [3, 4, 1], "tanh"),
        "fb_deep_relu": _random_network(rng, [4, 6, 5, 1], "relu"),
        **{f"cr_unseen_{i}": probe("chain_rule", x_value=x)
           for i, x in enumerate(_unseen_x(rng))},
        "step_stale": probe(
            "train_step",
            state={"weight": torch.randn(1, 1, generator=rng),
                   "bias": torch.randn(1, generator=rng)},
            stale_grads={"weight": torch.randn(1, 1, generator=rng) * 1.5 + 1.0,
                         "bias": torch.randn(1, generator=rng) * 1.5 - 1.0},
            lr=0.1, X=torch.randn(3, 1, generator=rng), y=torch.randn(3, 1, generator=rng)),
        "train_unseen_line": probe(
            "train", X=UNSEEN_LINE_X, y=slope * UNSEEN_LINE_X + intercept,
            epochs=UNSEEN_LINE_EPOCHS, lr=UNSEEN_LINE_LR,
            state={"weight": torch.randn(1, 1, generator=rng),
                   "bias": torch.randn(1, generator=rng)}),
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
    _check_gradients(probes["fb_lesson"], probes.inputs("fb_lesson"), "the lesson's network")
    near = probes.inputs("fb_lesson_near")
    _check_gradients(probes["fb_lesson_near"], near,
                     f"the lesson's network at x = {near['x'].tolist()[0]}, "
                     f"y_true = {float(near['y_true']):g}")


@hidden_test(cell="check_forward_backward", points=1,
             message="Use the model, x and y_true you are given: nothing in forward_backward "
                     "should depend on the lesson's network or its sizes.")
def unseen_network_gradients(probes):
    """Gradients of networks you have not seen (tanh; three layers)"""
    _check_gradients(probes["fb_tanh"], probes.inputs("fb_tanh"), "a 3-4-1 tanh network")
    _check_gradients(probes["fb_deep_relu"], probes.inputs("fb_deep_relu"),
                     "a 4-6-5-1 ReLU network")


@hidden_test(cell="check_forward_backward", points=1,
             message="forward_backward should return the loss tensor it called backward() on.")
def returns_the_loss(probes):
    """forward_backward returns the squared-error loss"""
    for name in ("fb_lesson", "fb_tanh", "fb_deep_relu"):
        loss = probes[name]["loss"]
        assert loss is not None, "forward_backward returned None"
        got = as_number(loss, "the returned loss")
        reference, _ = reference_mlp(probes.inputs(name))
        assert close(got, reference), f"It returned a loss of {got:.6g}, which is not the " \
                                      "squared error of this prediction"


# ---------------------------------------------------------------- Part 2: chain_rule

# What the student's process says about itself (x.requires_grad, "backward was called") may
# choose a message; points come only from values checked against references computed here.

def _chain_rule_gradient(out, x_value):
    assert "returned" not in out, (f"chain_rule({x_value:g}) returned a {out.get('returned')}, "
                                   "not the four values (x, y, z, loss)")
    if out.get("x_grad") is None:
        if out.get("x_requires_grad") is False:
            raise AssertionError("x was created without requires_grad=True, so PyTorch did not "
                                 "track it and x.grad stays None")
        if out.get("x_is_leaf") is False:
            raise AssertionError("x should be the tensor you created with requires_grad=True, "
                                 "not a result computed from it")
        raise AssertionError(f"After chain_rule({x_value:g}), x.grad is None: "
                             "call loss.backward()")
    return as_number(out["x_grad"], "x.grad")


IGNORES_X_VALUE = ("chain_rule ignores its x_value argument: it always computes at x = 2. "
                   "Create x from x_value: x = torch.tensor(x_value, requires_grad=True)")


def _at_two(got, x_value):
    """The answer for x = 2, given at another x: x_value was not used."""
    return abs(x_value - 2.0) > 1e-6 and close(got, chain_rule_gradient(2.0))


def _wrong_gradient(out, x_value, got):
    if _at_two(got, x_value) and out.get("backpropagations") != 0:
        return f"At x = {x_value:g} your x.grad is {got:g}, the gradient at x = 2: " \
               + IGNORES_X_VALUE
    if out.get("backpropagations") == 0:
        return (f"At x = {x_value:g} your x.grad is {got:g}, set without calling "
                "loss.backward(): let PyTorch compute it")
    return f"At x = {x_value:g} your x.grad is {got:g}"


@hidden_test(cell="check_chain_rule", points=1,
             message="dloss/dx = dloss/dz * dz/dy * dy/dx = 2z * 1 * 2x: let loss.backward() "
                     "compute it for you.")
def gradient_at_two(probes):
    """dloss/dx at x = 2 (and next to it)"""
    for name in ("cr_lesson", "cr_near"):
        x, out = probes.inputs(name)["x_value"], probes[name]
        got = _chain_rule_gradient(out, x)
        assert close(got, chain_rule_gradient(x)), _wrong_gradient(out, x, got)


@hidden_test(cell="check_chain_rule", points=1,
             message="Build the graph step by step from x: y = x ** 2, z = y + 3, loss = z ** 2.")
def graph_values(probes):
    """x, y, z and loss follow the lesson's three steps"""
    for probe_name in ("cr_lesson", "cr_near"):
        x_value, out = probes.inputs(probe_name)["x_value"], probes[probe_name]
        assert "returned" not in out, (f"chain_rule({x_value:g}) returned a "
                                       f"{out.get('returned')}, not the four values "
                                       "(x, y, z, loss)")
        x = as_number(out["x"], "x")
        if close(x, 2.0) and not close(x, x_value):
            raise AssertionError(f"chain_rule({x_value:g}) returned x = {x:g}: "
                                 + IGNORES_X_VALUE)
        assert close(x, x_value), (f"chain_rule({x_value:g}) returned x = {x:g}: x should "
                                   "hold x_value")
        y = x_value**2
        for name, rule, value in (("y", "y = x ** 2", y), ("z", "z = y + 3", y + 3),
                                  ("loss", "loss = z ** 2", (y + 3) ** 2)):
            got = as_number(out[name], name)
            assert close(got, value), f"At x = {x_value:g} your {name} is {got:g}; check {rule}"


@hidden_test(cell="check_chain_rule", points=1,
             message="x.grad must come from loss.backward() on the graph built from x_value, "
                     "so that it is right for any x.")
def gradient_at_unseen_inputs(probes):
    """dloss/dx at values of x you have not seen"""
    names = sorted(name for name in probes.names() if name.startswith("cr_unseen_"))
    gots = [(probes.inputs(name)["x_value"], probes[name]) for name in names]
    gots = [(x, out, _chain_rule_gradient(out, x)) for x, out in gots]
    if all(close(got, 56.0) for _, _, got in gots):
        if all(out.get("backpropagations") for _, out, _ in gots):  # backward ran, at x = 2
            raise AssertionError("x.grad is 56 whatever x is, the gradient at x = 2: "
                                 + IGNORES_X_VALUE)
        raise AssertionError("x.grad is 56 whatever x is: it looks written by hand "
                             "(x.grad = 56) rather than computed by loss.backward()")
    for x, out, got in gots:
        assert close(got, chain_rule_gradient(x)), _wrong_gradient(out, x, got)


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
    outcomes, fresh, _ = step_outcomes(probes.inputs("step_stale"))
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


def _sgd_step(point, X, y, lr):
    """One SGD step on the mean squared error of w * x + b, in float64."""
    w, b = point
    residual = w * X + b - y
    return w - lr * 2 * float((residual * X).mean()), b - lr * 2 * float(residual.mean())


def _check_path(out, inputs, what):
    """Training is judged on its path: every epoch must be one SGD step from where the
    previous one ended. (A fit snapped into place at the end is not a path SGD takes.)"""
    epochs = inputs["epochs"]
    path = as_tensor(out.get("path"), "the weights after each epoch")
    assert path.shape == (epochs, 2), (
        f"{what}, train() ran {tuple(path.shape)[0] if path.dim() else 0} epochs of "
        f"{epochs}: train_step must return after one step")
    X, y = inputs["X"].double().reshape(-1), inputs["y"].double().reshape(-1)
    point = (float(inputs["state"]["weight"]), float(inputs["state"]["bias"]))
    for epoch in range(epochs):
        expected = _sgd_step(point, X, y, inputs["lr"])
        got = (float(path[epoch, 0]), float(path[epoch, 1]))
        if not close(torch.tensor(got), torch.tensor(expected), rtol=1e-4, atol=1e-5):
            if got == point:
                raise AssertionError(f"{what}, epoch {epoch + 1} left the weights where they "
                                     f"were (weight {got[0]:.4f}, bias {got[1]:.4f})")
            raise AssertionError(
                f"{what}, epoch {epoch + 1} moved the weight from {point[0]:.4f} to "
                f"{got[0]:.4f} and the bias from {point[1]:.4f} to {got[1]:.4f}: "
                "not one SGD step on this batch's mean squared error")
        point = got
    return point


def _check_fit(out, inputs, slope, intercept, what):
    weight, bias = _check_path(out, inputs, what)
    assert abs(weight - slope) < TOLERANCE and abs(bias - intercept) < TOLERANCE, (
        f"{what}, the learned weight is {weight:.4f} and the bias {bias:.4f}: "
        f"not within {TOLERANCE} of the line")


def _line_of(inputs):
    """(slope, intercept) of the line the probe's data lie on."""
    X, y = inputs["X"].double().reshape(-1), inputs["y"].double().reshape(-1)
    slope = float(((X - X.mean()) * (y - y.mean())).sum() / ((X - X.mean()) ** 2).sum())
    return slope, float(y.mean() - slope * X.mean())


@hidden_test(cell="check_train", points=1,
             message="train() calls your train_step once per epoch: with the five calls in the "
                     "right order it reaches weight 2.0 from any starting point.")
def trained_weight_near_two(probes):
    """Training on y = 2x ends within 0.01 of weight 2.0, bias 0.0"""
    inputs = probes.inputs("train_lesson")
    start = float(inputs["state"]["weight"]), float(inputs["state"]["bias"])
    _check_fit(probes["train_lesson"], inputs, 2.0, 0.0,
               f"Trained on y = 2x from weight {start[0]:.4f}, bias {start[1]:.4f}")


@hidden_test(cell="check_train", points=1,
             message="Nothing in train_step should assume the data is y = 2x.")
def fits_an_unseen_line(probes):
    """Training fits a line you have not seen"""
    inputs = probes.inputs("train_unseen_line")
    slope, intercept = _line_of(inputs)
    _check_fit(probes["train_unseen_line"], inputs, slope, intercept,
               f"Trained on y = {slope:g}x {'+' if intercept >= 0 else '-'} {abs(intercept):g}")


# ---------------------------------------------------------------- the instructor's record

def expected_values(inputs):
    """What a right answer gives on this submission's inputs (kept for appeals, never shown
    to the student)."""
    expected = {}
    for name, given in inputs.items():
        if name.startswith("fb_"):
            loss, grads = reference_mlp(given)
            expected[name] = {"loss": float(loss), "grads": grads}
        elif name.startswith("cr_"):
            x = given["x_value"]
            expected[name] = {"y": x**2, "z": x**2 + 3, "loss": (x**2 + 3) ** 2,
                              "x_grad": chain_rule_gradient(x)}
        elif name == "step_stale":
            expected[name] = {"params": step_outcomes(given)[0]["right"]}
        elif name.startswith("train_"):
            point = (float(given["state"]["weight"]), float(given["state"]["bias"]))
            X, y = given["X"].double().reshape(-1), given["y"].double().reshape(-1)
            for _ in range(given["epochs"]):
                point = _sgd_step(point, X, y, given["lr"])
            expected[name] = {"weight": point[0], "bias": point[1]}
    return expected
