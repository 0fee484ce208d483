#!/usr/bin/python3
"""Regenerates the committed seed corpus of the preprocessing fuzzer
(tests/fuzz/corpus/) and the hand-made regression inputs
(tests/fuzz/regressions/crafted-*): tiny real images in every encoding the
server takes, and broken ones (truncated, lying headers, bad CRCs).
Needs python3-pil (Debian); run from anywhere. Outputs are committed; the
total stays well under 100 KB so that `make test` replays them quickly.
"""
import io
import os
import random
import struct
import zlib

from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
TESTDATA = os.path.join(os.path.dirname(HERE), "testdata")
CORPUS = os.path.join(HERE, "corpus")
REGRESSIONS = os.path.join(HERE, "regressions")


def write(directory, name, data):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data)


def encode(img, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def raw_png(width, height, depth=8, colour=2, rows=None, interlace=0):
    """A PNG written by hand: any declared size, optional pixel rows."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace)
    out = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
    if rows is not None:
        out += png_chunk(b"IDAT", zlib.compress(rows, 9))
    return out + png_chunk(b"IEND", b"")


def jpeg_with_size(jpeg, width, height):
    """The same JPEG with its first frame header claiming width x height."""
    i = 2
    while i + 4 <= len(jpeg):
        marker = jpeg[i + 1]
        length = struct.unpack(">H", jpeg[i + 2:i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return jpeg[:i + 5] + struct.pack(">HH", height, width) + jpeg[i + 9:]
        i += 2 + length
    raise ValueError("no frame header")


def main():
    random.seed(6)
    chelsea = Image.open(os.path.join(TESTDATA, "chelsea.png")).convert("RGB")
    coffee = Image.open(os.path.join(TESTDATA, "coffee.jpg")).convert("RGB")
    small = chelsea.resize((48, 32), Image.BILINEAR)
    tiny = coffee.resize((12, 8), Image.BILINEAR)

    seeds = {
        "chelsea_48x32.jpg": encode(small, "JPEG", quality=70),
        "chelsea_48x32_progressive.jpg": encode(small, "JPEG", quality=70, progressive=True),
        "chelsea_48x32_444.jpg": encode(small, "JPEG", quality=70, subsampling=0),
        "chelsea_48x32_gray.jpg": encode(small.convert("L"), "JPEG", quality=70),
        "chelsea_48x32_cmyk.jpg": encode(small.convert("CMYK"), "JPEG", quality=70),
        "coffee_12x8.jpg": encode(tiny, "JPEG", quality=50),
        "coffee_600x400_q10.jpg": encode(coffee, "JPEG", quality=10),
        "chelsea_48x32.png": encode(small, "PNG"),
        "chelsea_48x32_gray.png": encode(small.convert("L"), "PNG"),
        "chelsea_48x32_la.png": encode(small.convert("LA"), "PNG"),
        "chelsea_48x32_palette.png": encode(small.convert("P", palette=Image.ADAPTIVE, colors=16), "PNG"),
        "chelsea_48x32_rgba.png": encode(small.convert("RGBA"), "PNG"),
        "chelsea_48x32_1bit.png": encode(small.convert("1"), "PNG"),
        "coffee_12x8.png": encode(tiny, "PNG"),
        "one_pixel.png": encode(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"),
        "one_pixel.jpg": encode(Image.new("RGB", (1, 1), (200, 10, 10)), "JPEG"),
        # 16-bit RGB, written by hand (PIL cannot).
        "gradient_16x16_16bit.png": raw_png(16, 16, depth=16, colour=2, rows=b"".join(
            b"\x00" + b"".join(struct.pack(">HHH", x * 4096, y * 4096, 30000) for x in range(16))
            for y in range(16))),
        # Adam7-interlaced 1x1 gray (a single pass holds the pixel).
        "interlaced_1x1.png": raw_png(1, 1, depth=8, colour=0, rows=b"\x00\x80", interlace=1),
    }
    exif = Image.Exif()
    exif[0x0112] = 6
    seeds["chelsea_32x48_exif6.jpg"] = encode(small.rotate(90, expand=True), "JPEG", quality=70,
                                              exif=exif)

    jpg = seeds["chelsea_48x32.jpg"]
    png = seeds["chelsea_48x32.png"]
    broken = {
        "empty": b"",
        "random_bytes": bytes(random.getrandbits(8) for _ in range(512)),
        "jpeg_magic_only": b"\xff\xd8\xff",
        "png_magic_only": b"\x89PNG\r\n\x1a\n",
        "jpeg_truncated_half.jpg": jpg[:len(jpg) // 2],
        "jpeg_truncated_in_header.jpg": jpg[:100],
        "jpeg_no_eoi.jpg": jpg[:-2],
        "png_truncated_half.png": png[:len(png) // 2],
        "png_truncated_in_ihdr.png": png[:20],
        "jpeg_claims_30000x30000.jpg": jpeg_with_size(jpg, 30000, 30000),
        "png_claims_30000x30000.png": raw_png(30000, 30000),
        "jpeg_claims_zero_width.jpg": jpeg_with_size(jpg, 0, 32),
        "png_claims_zero_height.png": raw_png(48, 0),
        # Valid IHDR chunk, then a CRC that does not match.
        "png_bad_ihdr_crc.png": png[:29] + b"\x00\x00\x00\x00" + png[33:],
        # Pixel data flipped inside IDAT (CRC now wrong).
        "png_bad_idat_crc.png": png[:60] + bytes([png[60] ^ 0xFF]) + png[61:],
        # Declares more rows than the IDAT holds.
        "png_short_idat.png": raw_png(16, 64, rows=b"\x00" + b"\x80" * 48),
        # Scan data replaced with noise after the headers.
        "jpeg_noise_scan.jpg": jpg[:jpg.index(b"\xff\xda") + 14]
        + bytes(random.getrandbits(8) & 0xFE for _ in range(300)) + b"\xff\xd9",
        # A start-of-scan before any frame header.
        "jpeg_sos_first.jpg": b"\xff\xd8\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00" + b"\x00" * 32,
    }
    for name, data in {**seeds, **broken}.items():
        write(CORPUS, name, data)

    # Hand-made reproducers of bugs found while hardening (see README,
    # "Limits and Reliability"); each has a unit test in corpus_test.cc too.
    regressions = {
        # 1 x 2000 pixels: within every header limit, but resizing the
        # shorter side to 256 made a 256 x 512000 image (393 MB) before the
        # centre crop; at the server's default --max-image-side (16384) a
        # 1 x 16384 PNG asked for 3.2 GB.
        "crafted-extreme-aspect-1x2000.png": raw_png(1, 2000, depth=8, colour=0,
                                                     rows=b"\x00\x80" * 2000),
        "crafted-extreme-aspect-16384x1.png": raw_png(16384, 1, depth=8, colour=0,
                                                      rows=b"\x00" + b"\x40" * 16384),
        # A JPEG whose header reader and libjpeg disagree on the frame size:
        # "FF 00" is a stuffed zero to libjpeg (skipped as garbage) but a
        # segment with a length to a naive reader. The reader then finds a
        # decoy 16x16 frame header inside an APP0 segment that libjpeg skips,
        # while libjpeg decodes the real frame header: 30000x30000 (2.7 GB).
        "crafted-jpeg-ff00-decoy-sof.jpg": hidden_frame_jpeg(jpg, 30000, 30000),
    }
    for name, data in regressions.items():
        write(REGRESSIONS, name, data)


def hidden_frame_jpeg(jpg, width, height):
    decoy_sof = b"\xff\xc0\x00\x11\x08" + struct.pack(">HH", 16, 16) + b"\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    app0_payload = decoy_sof + b"\x00" * 8
    app0 = b"\xff\xe0" + struct.pack(">H", 2 + len(app0_payload)) + app0_payload
    # SOI, then FF 00 with "length" 6: a naive reader skips 2 + 6 bytes, i.e.
    # over "00 06" and the APP0 marker and length, and lands on the decoy.
    prefix = b"\xff\xd8" + b"\xff\x00\x00\x06" + app0[:4]
    assert len(prefix) == 2 + 2 + 6
    return prefix + app0[4:] + jpeg_with_size(jpg, width, height)[2:]


if __name__ == "__main__":
    main()
