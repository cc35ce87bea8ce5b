"""What an upload is, read from its bytes, and the images made fit to serve (Pillow).

The type is sniffed, never taken from the client. JPEG, PNG, GIF and WebP are decoded and
written again: what is stored and served carries no EXIF (GPS position, camera serial), XMP or
comment, only the pixels, the colour profile and an animation's timing. Their size in pixels is
checked from the header before anything is decoded, so a decompression bomb is refused unopened.
"""

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import puremagic
from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError

# The formats shown inline, by Pillow's name: their type and the extension of their key.
INLINE = {
    "JPEG": ("image/jpeg", ".jpg"),
    "PNG": ("image/png", ".png"),
    "GIF": ("image/gif", ".gif"),
    "WEBP": ("image/webp", ".webp"),
}
THUMBNAIL_BOX = (480, 360)
# What a decoded frame may keep of its metadata: how to show it, nothing about where it came from.
KEEP_INFO = ("duration", "loop", "transparency", "background", "disposal", "blend", "icc_profile")
OTHER_TYPE = "application/octet-stream"
_MIME = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,62}/[a-z0-9][a-z0-9!#$&^_.+-]{0,62}")
TEXT_SAMPLE = 8192


class ImageError(Exception):
    """An image that will not be served: ``code`` is ``image_too_large`` or ``bad_image``."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass(frozen=True)
class Prepared:
    """An upload ready to store: the file to keep (for an image, its clean copy) and what it is."""

    path: Path
    content_type: str
    extension: str  # Of its key: the store and nginx serve by it.
    width: int | None = None
    height: int | None = None
    thumbnail: Path | None = None  # An image's; an animation is its own (``path``).

    @property
    def is_image(self) -> bool:
        """Whether it is shown inline."""
        return self.width is not None


def prepare(source: Path, work: Path, max_pixels: int) -> Prepared:
    """Read ``source``: an image comes out clean with a thumbnail (in ``work``); anything else as
    it is, with the type its bytes tell. ``ImageError`` for an image too large or unreadable."""
    image = open_image(source)
    if image is None:
        return Prepared(source, sniff(source), ".bin")
    with image:
        return _prepare_image(image, work, max_pixels)


def open_image(source: Path) -> Image.Image | None:
    """``source`` opened, only its header read, if it is one of the ``INLINE`` formats; None if
    not. ``ImageError`` ``image_too_large`` past Pillow's limit (``CHAT_MAX_IMAGE_PIXELS``)."""
    try:
        with warnings.catch_warnings():
            # Past Pillow's limit (ours) it warns, past twice it raises: both refuse here.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(source, formats=list(INLINE))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError("image_too_large") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None


def _prepare_image(image: Image.Image, work: Path, max_pixels: int) -> Prepared:
    """Check, clean and thumbnail an image Pillow recognised from its header."""
    fmt = image.format or ""
    content_type, extension = INLINE[fmt]
    try:
        frames = getattr(image, "n_frames", 1)
        if image.width * image.height * frames > max_pixels:
            raise ImageError("image_too_large")
        clean = work / f"clean{extension}"
        if frames > 1:
            width, height = _save_animation(image, fmt, clean)
            thumbnail = clean
        else:
            turned = upright(image)
            width, height = turned.size
            _save_still(turned, fmt, clean)
            thumbnail = work / "thumbnail.webp"
            _save_thumbnail(turned, thumbnail)
    except Image.DecompressionBombError:
        raise ImageError("image_too_large") from None
    except (OSError, ValueError, SyntaxError, EOFError, KeyError):
        raise ImageError("bad_image") from None  # Truncated or corrupt past its header.
    return Prepared(clean, content_type, extension, width, height, thumbnail)


def upright(image: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says (the orientation is about to be dropped)."""
    image.load()
    turned = ImageOps.exif_transpose(image)
    return turned if turned is not None else image


def _clean(frame: Image.Image) -> Image.Image:
    """``frame`` with no metadata but how to show it (Pillow writes what ``info`` holds)."""
    frame.info = {key: frame.info[key] for key in KEEP_INFO if key in frame.info}
    return frame


def _save_still(image: Image.Image, fmt: str, target: Path) -> None:
    """Write one frame again, with nothing but its pixels and colour profile."""
    image = _clean(image.copy())
    if fmt == "JPEG":
        if image.mode not in {"RGB", "L", "CMYK"}:
            image = image.convert("RGB")
        image.save(target, "JPEG", quality=90, optimize=True, progressive=True)
    elif fmt == "WEBP":
        image.save(target, "WEBP", quality=90)
    else:
        image.save(target, fmt, optimize=fmt == "PNG")


def _save_animation(image: Image.Image, fmt: str, target: Path) -> tuple[int, int]:
    """Write every frame again, each without metadata but its timing; return the size."""
    frames = [_clean(frame.copy()) for frame in ImageSequence.Iterator(image)]
    durations = [frame.info.get("duration", 100) for frame in frames]
    frames[0].save(
        target,
        fmt,
        save_all=True,
        append_images=frames[1:],
        duration=durations,
        loop=image.info.get("loop", 0),
    )
    return image.size


def _save_thumbnail(image: Image.Image, target: Path) -> None:
    """A WebP of at most ``THUMBNAIL_BOX``, aspect kept (never larger than the image)."""
    small = image.copy()
    small.thumbnail(THUMBNAIL_BOX, Image.Resampling.LANCZOS)
    if small.mode not in {"RGB", "RGBA"}:
        has_alpha = small.mode in {"LA", "PA"} or "transparency" in small.info
        small = small.convert("RGBA" if has_alpha else "RGB")
    _clean(small).save(target, "WEBP", quality=80)


def sniff(path: Path) -> str:
    """The type of a file that is not an image we show, from its bytes: what puremagic knows,
    else text if it reads as UTF-8, else ``application/octet-stream``. Descriptive only: such a
    file is always served as a download of ``application/octet-stream``."""
    try:
        guess = puremagic.from_file(str(path), mime=True)
    except (puremagic.PureError, ValueError, OSError):
        guess = ""
    if guess and _MIME.fullmatch(guess.lower()):
        return guess.lower()
    with path.open("rb") as file:
        sample = file.read(TEXT_SAMPLE)
    if b"\0" not in sample and _is_utf8_prefix(sample):
        return "text/plain"
    return OTHER_TYPE


def _is_utf8_prefix(sample: bytes) -> bool:
    """Whether ``sample`` is UTF-8, but for a character cut at its end."""
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as error:
        return error.start >= len(sample) - 3 and error.reason == "unexpected end of data"
    return True
