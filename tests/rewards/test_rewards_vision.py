"""Vision rewards: IoU of bounding boxes (text and token level, coordinate frames) and accuracy on image rows."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from PIL import Image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

from grpolab.config.paths import CONF_DIR
from grpolab.models.vision import build_vlm_processor
from grpolab.rewards import Accuracy, build_rewards
from grpolab.rewards.vision import IoU, box_iou, parse_box, resized_size
from grpolab.rewards.vocabulary import describe_vocabulary

TOKENIZER = build_vlm_processor().tokenizer
VOCABULARY = describe_vocabulary(TOKENIZER, IoU(level="token").token_strings())


def _ids(text: str) -> list[int]:
    return TOKENIZER(text + "<|endoftext|>", add_special_tokens=False)["input_ids"]


def _score(reward, completions, **columns):
    return reward(prompts=[None] * len(completions), completions=completions,
                  completion_ids=[_ids(c) for c in completions], **columns)


def _token_iou(**kwargs) -> IoU:
    reward = IoU(level="token", **kwargs)
    reward.bind_tokens(VOCABULARY)
    return reward


COMPLETIONS = [
    "<answer>[10, 10, 30, 30]</answer>",   # exact
    "<answer>[20,10,40,30]</answer>",      # half overlap: 200 / 600
    "<think>left</think><answer>[0, 0, 5, 5]</answer>",  # disjoint
    "<answer>10, 10, 30, 30</answer>",     # no brackets: not a box
    "[10, 10, 30, 30]",                    # no answer tag
    "<answer>[30, 30, 10, 10]</answer>",   # inverted: no area
    "<answer>[10.5, 10, 30, 30.0]</answer><answer>[10, 10, 30, 30]</answer>",  # the last answer counts
]
EXPECTED = [1.0, 1 / 3, 0.0, 0.0, 0.0, 0.0, 1.0]


def test_box_helpers():
    assert parse_box(" [1,2 , 3.5, 4] ") == (1.0, 2.0, 3.5, 4.0)
    assert parse_box("1 2 3 4") is None
    assert box_iou((0, 0, 2, 2), (0, 0, 2, 2)) == 1.0 and box_iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0


@pytest.mark.parametrize("level", ["text", "token"])
def test_iou_scores_the_last_answer_box_at_both_levels(level):
    reward = _token_iou() if level == "token" else IoU(level="text")
    scores = _score(reward, COMPLETIONS, answer=["[10, 10, 30, 30]"] * len(COMPLETIONS))
    assert scores == pytest.approx(EXPECTED)


def test_token_iou_never_decodes_and_rejects_unknown_tokens():
    reward = _token_iou()
    # A letter inside the box is no box character: 0.0 at token level, exactly as the text parse fails.
    ids = [_ids("<answer>[1O, 10, 30, 30]</answer>")]
    assert reward(prompts=[None], completions=_Unreadable(), completion_ids=ids, answer=["[10, 10, 30, 30]"]) == [0.0]


class _Unreadable(list):
    def __iter__(self):
        raise AssertionError("the token variant read the decoded completions")

    def __len__(self):
        return 1


def test_threshold_gives_vlm_r1_style_binary_rewards():
    scores = _score(IoU(level="text", threshold=0.5), COMPLETIONS[:2], answer=["[10, 10, 30, 30]"] * 2)
    assert scores == [1.0, 0.0]


@pytest.mark.parametrize(
    ("frame", "predicted", "kwargs"),
    [
        ("unit", "[0.1, 0.2, 0.5, 0.6]", {}),
        ("per_mille", "[100, 200, 500, 600]", {}),
        ("resized", "[28, 28, 140, 84]", {"min_pixels": 3136, "max_pixels": 140 * 140}),
    ],
)
def test_frames_map_boxes_to_original_pixels_using_the_image(frame, predicted, kwargs):
    image = Image.new("RGB", (200, 100))
    # 200 x 100 resized within 140 x 140 pixels at factor 28 -> 196 x 84 (smart_resize); box in that frame.
    if frame == "resized":
        width, height = resized_size(200, 100, factor=28, **kwargs)
        gold = f"[{28 * 200 / width}, {28 * 100 / height}, {140 * 200 / width}, {84 * 100 / height}]"
    else:
        gold = "[20, 20, 100, 60]"
    for level in ("text", "token"):
        reward = _token_iou(frame=frame, **kwargs) if level == "token" else IoU(level="text", frame=frame, **kwargs)
        assert _score(reward, [f"<answer>{predicted}</answer>"], answer=[gold], image=[image]) == pytest.approx([1.0])
        # The same box read as pixels misses.
        assert _score(IoU(level="text"), [f"<answer>{predicted}</answer>"], answer=[gold])[0] < 0.9
    # Multi-image rows: the first image's size.
    many = IoU(level="text", frame=frame, **kwargs)
    assert _score(many, [f"<answer>{predicted}</answer>"], answer=[gold], images=[[image, Image.new("RGB", (9, 9))]]
                  ) == pytest.approx([1.0])


@pytest.mark.parametrize(("width", "height"), [(200, 100), (640, 480), (30, 500), (56, 56)])
def test_resized_size_is_qwen2_vl_smart_resize(width, height):
    height_bar, width_bar = smart_resize(height, width, factor=28, min_pixels=3136, max_pixels=112 * 112)
    assert resized_size(width, height, 3136, 112 * 112, 28) == (width_bar, height_bar)


def test_iou_mistakes_are_named():
    with pytest.raises(ValueError, match="rewards.iou.frame must be one of"):
        IoU(frame="inches")
    with pytest.raises(ValueError, match="frame=resized needs min_pixels and max_pixels"):
        IoU(frame="resized")
    with pytest.raises(ValueError, match="gold answer '3' .row 0. is not a box"):
        _score(IoU(level="text"), ["<answer>[1,1,2,2]</answer>"], answer=["3"])
    with pytest.raises(ValueError, match="frame=unit needs each row's image"):
        _score(IoU(level="text", frame="unit"), ["<answer>[0,0,1,1]</answer>"], answer=["[0,0,1,1]"])


@pytest.mark.parametrize("level", ["text", "token"])
def test_accuracy_scores_image_rows_and_receives_the_images(level):
    reward = Accuracy(level=level)
    reward.bind_tokens(VOCABULARY)
    images = [Image.new("RGB", (56, 56))] * 3
    completions = ["<answer>3</answer>", "<answer>4</answer>", "<answer>red</answer>"]
    columns = {"answer": ["3", "3", "red"], "image": images}
    if level == "token":
        columns["answer_ids"] = [TOKENIZER.encode(a, add_special_tokens=False) for a in columns["answer"]]
    assert _score(reward, completions, **columns) == [1.0, 0.0, 1.0]


def test_the_iou_option_builds_at_both_levels():
    for level in ("text", "token"):
        GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
                overrides = ["rewards=[iou]", "rewards.iou.threshold=0.5", f"reward_level={level}"]
                cfg = compose("train", overrides=overrides)
        finally:
            GlobalHydra.instance().clear()
        built = build_rewards(cfg.rewards, level, tokenizer=TOKENIZER)
        (reward,) = built.funcs
        assert isinstance(reward, IoU) and reward.level.value == level and reward.threshold == 0.5
        assert built.required_columns == {"iou": {"answer"}}
        assert _score(reward, COMPLETIONS[:2], answer=["[10, 10, 30, 30]"] * 2) == [1.0, 0.0]
