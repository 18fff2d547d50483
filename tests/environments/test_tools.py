"""The environment node: what it hands TRL, what it renders into prompts, and its one-line errors."""

from __future__ import annotations

import functools
from dataclasses import replace

import pytest
from hydra.utils import instantiate

from grpolab.environments.calculator import Calculator
from grpolab.environments.python import PythonInterpreter
from grpolab.environments.sandbox import ToolError
from grpolab.environments.tools import ToolEnvironment, check_chat_prompts


def lookup(key: str) -> str:
    """Look a key up.

    Args:
        key: The key.
    """
    return key * 3


def undocumented(key: str) -> str:
    return key


class Board:
    """A per-rollout environment: TRL resets it with the row, its public methods are tools."""

    def reset(self, **row):
        self.moves = []

    def move(self, square: int) -> str:
        """Play a square.

        Args:
            square: Which square.
        """
        self.moves.append(square)
        return f"moves: {self.moves}"


def test_functions_and_toolkits_become_guarded_tools_for_trl():
    environment = ToolEnvironment(tools=[functools.partial(lookup), Calculator(["add"])], timeout_s=1,
                                  max_output_chars=4)
    kwargs = environment.trainer_kwargs()
    assert [tool.__name__ for tool in kwargs["tools"]] == ["lookup", "add"] and kwargs["environment_factory"] is None
    assert kwargs["tools"][0]("ab") == "abab... [2 more characters]"
    assert environment.prompt_tools() == kwargs["tools"]
    assert environment.describe() == ("tools lookup, add; unlimited tool-calling rounds per completion, 1 s per call, "
                                      "results cut at 4 characters")


def test_an_environment_class_gives_one_guarded_instance_per_call_and_its_methods_as_tools():
    environment = ToolEnvironment(environment_factory=Board, max_tool_calling_iterations=3)
    factory = environment.trainer_kwargs()["environment_factory"]
    board = factory()
    board.reset()
    assert board.move(4) == "moves: [4]" and type(board).__name__ == "Board"
    assert [tool.__name__ for tool in environment.prompt_tools()] == ["move"]
    assert environment.describe().startswith("tools move (environment Board, one instance per rollout); at most 3")


def test_the_calculator_option_builds_from_its_yaml(compose_cfg):
    environment = instantiate(compose_cfg(["environment=calculator"]).environment, _convert_="all")
    assert [tool.__name__ for tool in environment.guarded] == ["add", "subtract", "multiply"]
    assert environment.trainer_kwargs()["tools"][2](12, 34) == 408
    with pytest.raises(ValueError, match="^a has 31 digits"):
        environment.guarded[0](10**30, 1)
    assert not compose_cfg([]).environment  # environment=none, the default: an empty node


def test_the_python_option_builds_with_its_sandbox_limits_from_the_node(compose_cfg):
    cfg = compose_cfg(["environment=python", "environment.tools.0.limits.wall_time_s=1", "environment.timeout_s=3",
                       "environment.max_output_chars=50"])
    environment = instantiate(cfg.environment, _convert_="all")
    limits = environment.toolkits[0].limits
    assert (limits.wall_time_s, limits.max_output_chars) == (1, 50)
    assert environment.isolation_notes()[0].startswith("python sandbox: ")
    python = environment.guarded[0]
    assert python("print(2 ** 10)") == "1024\n"
    with pytest.raises(ToolError, match="timed out after 1 s"):  # the sandbox stops it, before the backstop
        python("import time\ntime.sleep(60)")
    late = PythonInterpreter(replace(limits, wall_time_s=3))
    with pytest.raises(ValueError, match="^environment.timeout_s=3 must exceed the 3 s after which "
                                         "environment.tools.0 \(PythonInterpreter\) stops a call itself$"):
        ToolEnvironment(tools=[late], timeout_s=3)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({}, "environment: no tools; list functions or toolkits under environment.tools"),
    ({"tools": [undocumented]}, "environment.tools: TRL cannot describe the tool 'undocumented' to the model"),
    ({"tools": [lookup, lookup]}, "environment.tools: two tools are named 'lookup'"),
    ({"tools": [functools.partial(lookup, key="x")]}, "environment.tools.0: lookup is given arguments \\(key\\)"),
    ({"tools": [42]}, "environment.tools.0=42 is neither a function"),
    ({"tools": [lookup], "max_tool_calling_iterations": 0}, "environment.max_tool_calling_iterations=0 must be"),
    ({"environment_factory": dict}, "environment.environment_factory: dict has no reset\\(\\) method"),
])
def test_bad_environments_fail_in_one_line(kwargs, message):
    with pytest.raises(ValueError, match=f"^{message}") as error:
        ToolEnvironment(**kwargs)
    assert "\n" not in str(error.value)


def test_text_prompts_cannot_carry_tool_calls():
    from grpolab.data.arithmetic import ArithmeticTask

    splits = ArithmeticTask(train_size=4, eval_size=2, max_operand=9, operations=["+"], seed=0).load()
    with pytest.raises(ValueError, match="^environment: tools need chat prompts .* the train split of "
                                         "grpolab.data.arithmetic.ArithmeticTask has str prompts"):
        check_chat_prompts(splits, "grpolab.data.arithmetic.ArithmeticTask")


def test_the_tokenizer_mode_study_composes_on_the_tool_task(compose_cfg):
    from grpolab.config.validate import validate

    cfg = compose_cfg(["experiment=[tools,text_vs_token]"], return_hydra_config=True)
    assert dict(cfg.hydra.sweeper.params) == {"tokenizer_mode": "text,ids", "reward_level": "text,token",
                                              "seed": "0,1"}
    assert cfg.environment.tools[0].operations == ["add", "subtract", "multiply"]
    assert list(cfg.rewards) == ["accuracy", "tool_use"]
    # The experiment sets no environment key: another option replaces the calculator whole.
    assert not compose_cfg(["experiment=tools", "environment=none"]).environment
    python = compose_cfg(["experiment=tools", "environment=python"]).environment
    assert [tool._target_ for tool in python.tools] == ["grpolab.environments.python.PythonInterpreter"]
    validate(compose_cfg(["experiment=[tools,text_vs_token]", "reward_level=token", "tokenizer_mode=ids"]))
