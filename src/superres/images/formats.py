"""The image formats superres knows: one table, `FORMATS`, and every list of formats derived from it.

Each row says what a format is (its extensions, the bytes its files start with, its media type),
what superres does with it (reads it, writes it) and what it can hold (alpha, 16 bits per sample,
an ICC profile), whether a browser shows it, and who codes it: Pillow, plus one of our own codecs
(`codec`) for the files Pillow cannot hold. Everything else reads the table:

    superres.images           READ_EXTENSIONS, IMAGE_EXTENSIONS, `list_images`; which codec reads a
                              file and which writes an extension; alpha composited, 16 bits rounded
                              and ICC profiles dropped where a format cannot hold them
    superres.images.pillow    the formats Pillow may open, and its "not a ... image" message
    superres.images.png/tiff  the bytes their files start with
    superres.serve            the upload sniffer, media types, previews for formats a browser does
                              not show, and the page's file picker (`accept`) and its hint

Adding a format is one row here, plus a codec if Pillow lacks one (a module of superres.images
named by `codec`, registered in `superres.images._OWN_CODECS`). The functions below read `FORMATS`
each time they are called, so nothing keeps a copy that could drift from it.

GIF is read (its first frame, palette converted) but never written: an upscaled photo does not fit
a 256-colour palette. The server takes only formats that are both read and written, since it
hands back the result in the uploaded file's format.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Magic:
    """Bytes every file of a format starts with: `prefix` at offset 0, and `then` at fixed offsets
    after it (WebP: "RIFF", a 4-byte size, then "WEBP" at offset 8)."""

    prefix: bytes
    then: tuple[tuple[int, bytes], ...] = ()

    @property
    def length(self) -> int:
        """How many leading bytes a file needs to be matched."""
        return max([len(self.prefix), *(offset + len(part) for offset, part in self.then)])

    def matches(self, head: bytes) -> bool:
        return head.startswith(self.prefix) and all(
            head[offset : offset + len(part)] == part for offset, part in self.then
        )


@dataclass(frozen=True)
class ImageFormat:
    """One row of the table. See the module's docstring for who reads which column."""

    name: str  # in code and job records; Pillow's name for the format where Pillow codes it
    label: str  # in messages: "WebP"
    extensions: tuple[str, ...]  # lower case; the first names a file whose name is ours to choose
    magic: tuple[Magic, ...]  # any one of them: the content decides, never the file's name
    mime: str
    can_read: bool
    can_write: bool
    alpha: bool  # stores transparency; where it cannot, alpha is composited over a background
    sixteen_bit: bool  # stores 16 bits per sample; where it cannot, 16-bit pixels are rounded to 8
    icc_profile: bool  # stores an ICC profile; where it cannot, the profile is dropped
    browser_shows: bool  # an <img> shows it; the server makes PNG previews of the others
    pillow: bool  # Pillow reads and writes it (all of it but what `codec` takes)
    codec: str | None  # our own codec, for the files Pillow cannot hold; None: Pillow alone
    why_read_only: str = ""  # can_write False: why, for the error a write gets

    def matches(self, head: bytes) -> bool:
        """Whether a file starting with `head` is of this format."""
        return any(magic.matches(head) for magic in self.magic)

    @property
    def head_length(self) -> int:
        """How many leading bytes `matches` needs."""
        return max(magic.length for magic in self.magic)


PNG = ImageFormat(
    name="PNG", label="PNG", extensions=(".png",), magic=(Magic(b"\x89PNG\r\n\x1a\n"),),
    mime="image/png", can_read=True, can_write=True,
    alpha=True, sixteen_bit=True, icc_profile=True, browser_shows=True,
    pillow=True, codec="png",  # Pillow keeps 8 bits of a 16-bit gray+alpha or colour PNG
)
JPEG = ImageFormat(
    name="JPEG", label="JPEG", extensions=(".jpg", ".jpeg"), magic=(Magic(b"\xff\xd8\xff"),),
    mime="image/jpeg", can_read=True, can_write=True,
    alpha=False, sixteen_bit=False, icc_profile=True, browser_shows=True,
    pillow=True, codec=None,
)
BMP = ImageFormat(
    name="BMP", label="BMP", extensions=(".bmp",), magic=(Magic(b"BM"),),
    mime="image/bmp", can_read=True, can_write=True,
    alpha=False, sixteen_bit=False, icc_profile=False, browser_shows=True,
    pillow=True, codec=None,
)
TIFF = ImageFormat(
    name="TIFF", label="TIFF", extensions=(".tif", ".tiff"),
    # Classic TIFF and BigTIFF, little- and big-endian.
    magic=(Magic(b"II*\x00"), Magic(b"MM\x00*"), Magic(b"II+\x00"), Magic(b"MM\x00+")),
    mime="image/tiff", can_read=True, can_write=True,
    alpha=True, sixteen_bit=True, icc_profile=True, browser_shows=False,
    pillow=True, codec="tiff",  # Pillow has no 16-bit gray+alpha, RGB or RGBA
)
WEBP = ImageFormat(
    name="WEBP", label="WebP", extensions=(".webp",), magic=(Magic(b"RIFF", then=((8, b"WEBP"),)),),
    mime="image/webp", can_read=True, can_write=True,
    alpha=True, sixteen_bit=False, icc_profile=True, browser_shows=True,
    pillow=True, codec=None,
)
GIF = ImageFormat(
    name="GIF", label="GIF", extensions=(".gif",), magic=(Magic(b"GIF87a"), Magic(b"GIF89a")),
    mime="image/gif", can_read=True, can_write=False,
    alpha=True, sixteen_bit=False, icc_profile=False, browser_shows=True,
    pillow=True, codec=None, why_read_only="256 colours would undo the upscale",
)

#: Every format superres reads or writes, in the order lists and messages name them.
FORMATS: tuple[ImageFormat, ...] = (PNG, JPEG, BMP, TIFF, WEBP, GIF)


def readable() -> tuple[ImageFormat, ...]:
    return tuple(fmt for fmt in FORMATS if fmt.can_read)


def writable() -> tuple[ImageFormat, ...]:
    return tuple(fmt for fmt in FORMATS if fmt.can_write)


def read_extensions() -> tuple[str, ...]:
    """The extensions of the formats read (`superres.images.READ_EXTENSIONS`)."""
    return tuple(ext for fmt in readable() for ext in fmt.extensions)


def write_extensions() -> tuple[str, ...]:
    """The extensions of the formats written (`superres.images.IMAGE_EXTENSIONS`)."""
    return tuple(ext for fmt in writable() for ext in fmt.extensions)


def for_extension(extension: str) -> ImageFormat | None:
    """The format whose extensions include `extension` (any case, with its dot), or None."""
    extension = extension.lower()
    return next((fmt for fmt in FORMATS if extension in fmt.extensions), None)


def by_name(name: str) -> ImageFormat | None:
    return next((fmt for fmt in FORMATS if fmt.name == name), None)


def head_length() -> int:
    """How many leading bytes of a file `sniff` needs."""
    return max(fmt.head_length for fmt in FORMATS)


def sniff(head: bytes, among: tuple[ImageFormat, ...] | None = None) -> ImageFormat | None:
    """The format of a file starting with `head` (the file's first `head_length()` bytes or more),
    among `among` (default: those read), or None."""
    return next((fmt for fmt in (readable() if among is None else among) if fmt.matches(head)), None)


def in_words(formats: tuple[ImageFormat, ...]) -> str:
    """The formats' labels as a sentence says them: "PNG, JPEG, BMP, TIFF, WebP or GIF"."""
    labels = [fmt.label for fmt in formats]
    return labels[0] if len(labels) == 1 else f"{', '.join(labels[:-1])} or {labels[-1]}"
