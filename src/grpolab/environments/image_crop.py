"""``environment=crop``: a tool that shows a vision-language model a region of its input image, enlarged.

The model calls ``crop(left, top, right, bottom)`` with a box in the input image's pixels (PIL's convention: left and
top inclusive, right and bottom exclusive); the result is the region as an image, which TRL 1.16 appends to the
conversation as an image content block (``{"type": "image", "image": <PIL image>}``), processes with the model's image
processor and feeds to the model for the next turn (its image tokens are tool output: never trained on).

The tool needs the row's image, so it is an environment class (TRL's ``environment_factory``): one instance per
rollout, ``reset(**row)`` hands it the row, whose image it keeps (the first, for rows with several; ``image``,
``images`` or their ids-form ``source_`` names). A box outside the image, an empty or too small one, or arguments
that are not integers raise, which TRL reports to the model as a failed call.
"""

from __future__ import annotations

from typing import Any

from PIL import Image


class ImageCrop:
    """Crop (and zoom) the input image of the current row.

    ``zoom_size``: the region is resized (aspect kept) so that its longer side has this many pixels, the zoom (None:
    the region as cut; the image processor still resizes it to its own pixel bounds). ``min_size``: the smallest
    width and height, in pixels, a box may have.

    >>> tool = ImageCrop(zoom_size=56)
    >>> tool.reset(image=Image.new("RGB", (112, 56)))
    >>> [block["image"].size for block in tool.crop(left=0, top=0, right=28, bottom=14)]
    [(56, 28)]
    >>> tool.crop(left=0, top=0, right=200, bottom=14)
    Traceback (most recent call last):
    ...
    ValueError: right=200 is outside the image (0..112)
    """

    returns_images = True  # what grpolab.environments.tools checks against the model and the data

    def __init__(self, zoom_size: int | None = 56, min_size: int = 4) -> None:
        if zoom_size is not None:
            _check_pixels("zoom_size", zoom_size, " or null (no zoom)")
        _check_pixels("min_size", min_size)
        self.zoom_size = zoom_size
        self.min_size = min_size
        self.image: Image.Image | None = None

    def reset(self, **row: Any) -> None:
        """Keep the row's (first) image; nothing is added to the prompt."""
        from grpolab.data.prompts import row_images

        images = row_images(row)
        self.image = images[0] if images else None

    def crop(self, left: int, top: int, right: int, bottom: int) -> list[dict[str, Any]]:
        """Look closer at a region of the image: returns that region, enlarged.

        Args:
            left: The region's left edge, in pixels from the image's left edge.
            top: The region's top edge, in pixels from the image's top edge.
            right: The region's right edge (exclusive), in pixels from the image's left edge.
            bottom: The region's bottom edge (exclusive), in pixels from the image's top edge.
        """
        if self.image is None:
            raise ValueError("this prompt has no image to crop")
        width, height = self.image.size
        box = {"left": left, "top": top, "right": right, "bottom": bottom}
        for name, value in box.items():  # the model writes the arguments: anything may arrive
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an integer number of pixels, got {type(value).__name__} "
                                 f"{value!r:.40}")
        for name, limit in (("left", width), ("right", width), ("top", height), ("bottom", height)):
            if not 0 <= box[name] <= limit:
                raise ValueError(f"{name}={box[name]} is outside the image (0..{limit})")
        if right - left < self.min_size or bottom - top < self.min_size:
            raise ValueError(f"the box is {right - left}x{bottom - top} pixels; it must be at least "
                             f"{self.min_size}x{self.min_size}, with left < right and top < bottom")
        region = self.image.convert("RGB").crop((left, top, right, bottom))
        if self.zoom_size is not None:
            scale = self.zoom_size / max(region.size)
            region = region.resize((max(1, round(region.width * scale)), max(1, round(region.height * scale))),
                                   Image.Resampling.BICUBIC)
        return [{"type": "image", "image": region}]


def _check_pixels(name: str, value: Any, alternative: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"environment.environment_factory.{name}={value!r} must be a positive integer (pixels)"
                         f"{alternative}")
