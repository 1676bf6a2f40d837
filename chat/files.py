"""Talk attachments: the file-type policy (`upload_check`, pure) and the store of uploaded files on disk.

`upload_check` decides from the bytes, never from what the client claims: the content type is sniffed, an
executable or installer is refused whatever it is called, and a file is only an image when Pillow can read it
and it carries no web-page code. The store keeps files in TALK_FILES_DIR under random names; `file_path`
accepts nothing but such a name, so a name taken from a request can never reach another file.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import secrets
import tempfile
import unicodedata
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import filetype  # type: ignore[import-untyped]  # filetype ships no type hints; only `guess` is used
from django.conf import settings
from django.utils.translation import gettext as _
from PIL import Image

from chat.models import FilePolicy
from config.errors import ApplicationError


class FileRefusal(StrEnum):
    """Stable codes of a refused upload (ApplicationError.code)."""

    DISABLED = "files_disabled"
    TOO_LARGE = "file_too_large"
    EMPTY = "file_empty"
    TYPE_BLOCKED = "file_type_blocked"
    NOT_AN_IMAGE = "not_an_image"
    BAD_FILENAME = "bad_filename"


@dataclass(frozen=True)
class FileVerdict:
    content_type: str  # decided from the content, never from the client
    is_image: bool  # a real JPEG, PNG or GIF without web-page code: the page shows a preview


# fmt: off
BLOCKED_EXTENSIONS = frozenset({
    "ade", "adp", "apk", "bat", "chm", "cmd", "com", "cpl", "dll", "dmg", "exe", "hta", "ins", "isp", "iso", "jar",
    "js", "jse", "lib", "lnk", "mde", "msc", "msi", "msp", "mst", "nsh", "pif", "scr", "sct", "shb", "sys", "vb",
    "vbe", "vbs", "vxd", "wsc", "wsf", "wsh", "cab",
})
# fmt: on
IMAGE_EXTENSIONS = frozenset({"jpeg", "jpg", "png", "gif"})

MAX_FILENAME_LENGTH = 255
OCTET_STREAM = "application/octet-stream"
_SNIFF_BYTES = 8192  # the sniffer reads no further

# Pillow's format -> the content type an image is served with (MPO is a camera JPEG with extra frames).
_PILLOW_TYPES = {"JPEG": "image/jpeg", "MPO": "image/jpeg", "PNG": "image/png", "GIF": "image/gif"}
# The sniffer's name for each of them (an animated PNG is image/apng to it, and served as image/png).
_SNIFFED_IMAGE_TYPES = {
    "image/jpeg": "image/jpeg",
    "image/png": "image/png",
    "image/apng": "image/png",
    "image/gif": "image/gif",
}
# Sniffed types that name what is refused; an allowed file that sniffs as one (a text file starting with "MZ")
# is served as plain bytes rather than labelled a program.
_PROGRAM_TYPES = frozenset({"application/x-msdownload", "application/vnd.ms-cab-compressed"})

# Not allowed in a file name: control characters (C0, DEL, C1), line and paragraph separators, and the
# bidirectional controls that make "photo‮gpj.exe" look like "photoexe.jpg".
_CONTROL = "\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_BAD_NAME_CHARS = re.compile(f"[{_CONTROL}]")
_DOWNLOAD_REMOVED_CHARS = re.compile(f'[{_CONTROL}/\\\\"]')

# Web-page code inside an image: a browser that sniffs the file as HTML or SVG would run it. A tag counts only
# when its name ends (white space, "/" or ">"), as for an HTML parser, which keeps the chance of a random match
# in compressed image data negligible. Searched in a lower-cased copy of the bytes.
_MARKUP = re.compile(rb"<(?:script|html|body|iframe|svg|object|embed)[\t\n\f\r />]|<!doctype|<\?php|javascript:")

# --- Executables and installers, recognised by their content whatever the file is called ---
_OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
# Root-storage CLSIDs of Windows Installer files as stored (little-endian GUIDs): transform {000C1082-…},
# package {000C1084-…} and patch {000C1086-…}, each …-0000-0000-C000-000000000046. Word and Excel files are
# OLE2 too, with other CLSIDs, and stay allowed.
_MSI_CLSIDS = frozenset(
    {
        bytes.fromhex("82100c0000000000c000000000000046"),
        bytes.fromhex("84100c0000000000c000000000000046"),
        bytes.fromhex("86100c0000000000c000000000000046"),
    }
)
_LNK = bytes.fromhex("4c0000000114020000000000c000000000000046")  # header size 0x4C, then the shell-link CLSID
# ISO 9660 and UDF volume descriptors: the identifier is one byte into each 2048-byte descriptor from
# sector 16 on (0x8001, 0x8801, 0x9001, …); a disc has a few of them before its UDF ones.
_DISC_IDENTIFIERS = frozenset({b"CD001", b"NSR02", b"NSR03"})
_DISC_OFFSETS = range(0x8001, 0x8001 + 32 * 0x800, 0x800)
# A zip entry at the root of the archive whose name makes the zip a Java or Android program. The name follows a
# central-directory header (46 bytes) or a local header (30 bytes). Java reads a zip from its end, so the zip
# may sit behind anything (a GIF, say); Java matches META-INF names ignoring case.
_PROGRAM_ZIP = re.compile(
    rb"PK(?:\x01\x02[\s\S]{42}|\x03\x04[\s\S]{26})(?i:META-INF/MANIFEST\.MF|AndroidManifest\.xml|classes\.dex)"
)

_STORED_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def upload_check(*, filename: str, data: bytes, policy: str, max_bytes: int) -> FileVerdict:
    """Decide whether a file may be sent under the organisation's file policy, and what it is.

    Pure: no ORM, no file system. Raises ApplicationError (400, a FileRefusal code) when the file is refused;
    otherwise returns the content type sniffed from the bytes and whether the page may show it as an image.
    A policy that is not a FilePolicy value is a programming error (ValueError)."""
    if policy not in FilePolicy.values:
        raise ValueError(f"unknown file policy: {policy!r}")
    if policy == FilePolicy.DISABLED:
        raise ApplicationError(
            _(
                "Files cannot be sent in this organisation. "
                "If you need to share a file, please ask your talk administrator."
            ),
            code=FileRefusal.DISABLED,
        )
    if len(data) > max_bytes:
        raise ApplicationError(_too_large_message(max_bytes), code=FileRefusal.TOO_LARGE)
    if not data:
        raise ApplicationError(
            _("The file is empty. Please choose a file that has something in it."), code=FileRefusal.EMPTY
        )
    _check_filename(filename)
    # The extension is judged both as sent and as it will be offered on download, which drops some characters
    # ('run.ex"e' is offered as "run.exe").
    extensions = {_extension(filename), _extension(download_filename(filename))}

    if policy == FilePolicy.IMAGES_ONLY:
        if not extensions <= IMAGE_EXTENSIONS:
            raise ApplicationError(
                _("Only images (JPEG, PNG or GIF) can be sent in this organisation. Please choose an image file."),
                code=FileRefusal.NOT_AN_IMAGE,
            )
        _refuse_program(data)
        try:
            image_type = _image_type(data)
        except Image.DecompressionBombError:
            raise ApplicationError(
                _("This image has too many pixels to be sent. Please make it smaller and try again."),
                code=FileRefusal.NOT_AN_IMAGE,
            ) from None
        if image_type is None:
            raise ApplicationError(
                _("This file is not a JPEG, PNG or GIF image that can be opened. Please choose another image."),
                code=FileRefusal.NOT_AN_IMAGE,
            )
        if _has_markup(data):
            raise ApplicationError(
                _(
                    "This image contains web page or script code, so it cannot be sent. "
                    "Please save it again with an image editor, or choose another image."
                ),
                code=FileRefusal.NOT_AN_IMAGE,
            )
        return FileVerdict(content_type=image_type, is_image=True)

    # All files except executables.
    blocked = sorted(extensions & BLOCKED_EXTENSIONS)
    if blocked:
        raise ApplicationError(
            _(
                "Files ending in .%(extension)s cannot be sent because they can run programs. "
                "If you need to share one, please ask your talk administrator."
            )
            % {"extension": blocked[0]},
            code=FileRefusal.TYPE_BLOCKED,
        )
    _refuse_program(data)
    try:
        image_type = _image_type(data)
    except Image.DecompressionBombError:
        image_type = None  # sent as a download, without a preview
    if image_type is not None and not _has_markup(data):
        return FileVerdict(content_type=image_type, is_image=True)
    sniffed = _sniff(data)
    # An image that failed the image check (broken, or carrying web-page code) is served as plain bytes, so
    # nothing downstream shows it inline.
    if sniffed is None or sniffed in _SNIFFED_IMAGE_TYPES or sniffed in _PROGRAM_TYPES:
        return FileVerdict(content_type=OCTET_STREAM, is_image=False)
    return FileVerdict(content_type=sniffed, is_image=False)


def _too_large_message(max_bytes: int) -> str:
    mib = 1024 * 1024
    if max_bytes >= mib:
        message = _(
            "Files larger than %(size)s MB cannot be sent. Please make the file smaller or share it another way."
        )
        return message % {"size": _amount(max_bytes / mib)}
    message = _("Files larger than %(size)s KB cannot be sent. Please make the file smaller or share it another way.")
    return message % {"size": _amount(max_bytes / 1024)}


def _amount(value: float) -> str:
    """30.0 -> "30", 2.5 -> "2.5", 0.25 -> "0.2": a whole number stays whole, others get one decimal."""
    return str(int(value)) if value.is_integer() else f"{value:.1f}"


def _check_filename(filename: str) -> None:
    if not filename.strip(" ./\\"):
        raise ApplicationError(
            _("The file has no name. Please give the file a name and try again."), code=FileRefusal.BAD_FILENAME
        )
    if len(filename) > MAX_FILENAME_LENGTH:
        raise ApplicationError(
            _("The file name is too long (at most %(max)d characters). Please rename the file and try again.")
            % {"max": MAX_FILENAME_LENGTH},
            code=FileRefusal.BAD_FILENAME,
        )
    if _BAD_NAME_CHARS.search(filename):
        raise ApplicationError(
            _("The file name contains invisible control characters. Please rename the file and try again."),
            code=FileRefusal.BAD_FILENAME,
        )


def _extension(name: str) -> str:
    """The last extension as Windows sees it: compatibility forms folded (NFKC, so "ｅｘｅ" is "exe"), trailing
    dots and spaces dropped ("evil.exe." and "evil.exe " are .exe), lower case."""
    folded = unicodedata.normalize("NFKC", name).rstrip(". \t\n\r\f\v")
    _stem, dot, extension = folded.rpartition(".")
    return extension.strip().lower() if dot else ""


def _sniff(data: bytes) -> str | None:
    kind = filetype.guess(data[:_SNIFF_BYTES])
    return None if kind is None else str(kind.mime)


def _image_type(data: bytes) -> str | None:
    """The content type of a real JPEG, PNG or GIF: the sniffer and Pillow agree on the format, and Pillow
    opens and verifies it. None for anything else; DecompressionBombError for an image of too many pixels."""
    sniffed = _SNIFFED_IMAGE_TYPES.get(_sniff(data) or "")
    if sniffed is None:
        return None
    try:
        with Image.open(io.BytesIO(data), formats=["JPEG", "PNG", "GIF"]) as image:
            opened = _PILLOW_TYPES.get(image.format or "")
            if image.width < 1 or image.height < 1:
                return None
            image.verify()
    except Image.DecompressionBombError:
        raise
    except Exception:  # a hostile file can make Pillow raise almost anything; all of them mean "not an image"
        return None
    return sniffed if opened == sniffed else None


def _has_markup(data: bytes) -> bool:
    return _MARKUP.search(data.lower()) is not None


def _refuse_program(data: bytes) -> None:
    if _is_program(data):
        raise ApplicationError(
            _(
                "This file is a program or an installer, so it cannot be sent. "
                "If you need to share it, please ask your talk administrator."
            ),
            code=FileRefusal.TYPE_BLOCKED,
        )


def _is_program(data: bytes) -> bool:
    """Windows executables and installers, Java and Android programs, disc images and shortcuts."""
    return (
        _is_mz(data)
        or _is_msi(data)
        or data.startswith(b"MSCF\x00\x00\x00\x00")  # cabinet: the signature, then a reserved zero
        or (data.startswith(b"ITSF") and data[5:8] == b"\x00\x00\x00")  # compiled HTML help: ITSF, a small version
        or data.startswith(_LNK)
        or any(data[offset : offset + 5] in _DISC_IDENTIFIERS for offset in _DISC_OFFSETS)
        or _is_dmg(data)
        or _PROGRAM_ZIP.search(data) is not None
    )


def _is_mz(data: bytes) -> bool:
    """A DOS or Windows executable ("MZ": PE files and the old NE/LE ones). Its 64-byte DOS header is binary
    (its reserved words are zero), so a text file that happens to start with "MZ" (in any encoding that keeps
    control characters out of text) is not taken for one."""
    if data[:2] not in (b"MZ", b"ZM") or len(data) < 64:
        return False
    return any(byte < 0x09 or 0x0D < byte < 0x20 for byte in data[2:64])


def _is_msi(data: bytes) -> bool:
    """An OLE2 compound file whose root storage carries a Windows Installer CLSID."""
    if not data.startswith(_OLE2) or len(data) < 512:
        return False
    sector_shift = int.from_bytes(data[0x1E:0x20], "little")
    if sector_shift not in (9, 12):  # 512- or 4096-byte sectors
        return False
    first_directory_sector = int.from_bytes(data[0x30:0x34], "little")
    if first_directory_sector >= 0xFFFFFFFA:  # a marker, not a sector
        return False
    root = (first_directory_sector + 1) << sector_shift  # sector 0 starts after the header (one sector long)
    return data[root + 0x50 : root + 0x60] in _MSI_CLSIDS


def _is_dmg(data: bytes) -> bool:
    """An Apple disk image: its last 512 bytes are the "koly" trailer (signature, version, header size 512)."""
    return len(data) >= 512 and data[-512:-508] == b"koly" and data[-504:-500] == b"\x00\x00\x02\x00"


def file_store(data: bytes) -> tuple[str, str]:
    """Write `data` under a new random name in TALK_FILES_DIR (created with mode 0o700 on first use),
    atomically: a reader finds the whole file or none. Returns (stored_name, sha256 hex)."""
    directory = Path(settings.TALK_FILES_DIR)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    stored_name = secrets.token_urlsafe(32)  # 43 characters of [A-Za-z0-9_-]
    # The temporary name has a dot, so file_path never hands out a half-written file.
    descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=".upload-")
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, directory / stored_name)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return stored_name, hashlib.sha256(data).hexdigest()


def file_path(stored_name: str) -> Path:
    """The path of a stored file. Raises ValueError for anything but a stored name, so a crafted name ("../x",
    "/etc/passwd", "..") can never point outside TALK_FILES_DIR."""
    if not isinstance(stored_name, str) or _STORED_NAME.fullmatch(stored_name) is None:
        raise ValueError(f"not a stored file name: {stored_name!r}")
    return Path(settings.TALK_FILES_DIR) / stored_name


def file_remove(stored_name: str) -> None:
    """Remove a stored file; a file that is already gone is fine."""
    file_path(stored_name).unlink(missing_ok=True)


def download_filename(name: str) -> str:
    """The name offered on download: the uploader's name (NFC, so a Mac's decomposed kana are whole again)
    without path separators, control characters, bidirectional controls and double quotes, trimmed, at most
    255 characters with its extension kept, and never empty ("file")."""
    cleaned = _DOWNLOAD_REMOVED_CHARS.sub("", unicodedata.normalize("NFC", str(name))).strip()
    if not cleaned.strip("."):
        return "file"
    if len(cleaned) > MAX_FILENAME_LENGTH:
        stem, dot, extension = cleaned.rpartition(".")
        if dot and stem and len(extension) <= 16:
            cleaned = stem[: MAX_FILENAME_LENGTH - len(extension) - 1] + "." + extension
        else:
            cleaned = cleaned[:MAX_FILENAME_LENGTH]
    return cleaned
