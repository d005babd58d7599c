"""Spoken commands: a small English grammar of things said to a home assistant, voiced by espeak-ng.

A sentence is a template with slots, filled at random; a slot's filler may hold slots of its own:

    "remind me to {task} at {time}"  ->  "remind me to call my sister at half past six"

Everything is lower case letters and single spaces, numbers spelled as words ("twenty five minutes"), so a
character model reads the text as it is heard. The grammar's words (`vocabulary`) number about 200.

Held out: about a fifth of the templates are for testing only (`TEST_TEMPLATES`: new ways of saying the same
things, from the same slots), and so are some voices (`TEST_VOICES`: two accents and three voice variants that
no training voice uses). ``sentences(rng, n, "test")`` and ``utterances(rng, n, "test")`` draw from those.

Synthesis runs ``espeak-ng -v VOICE -s RATE -p PITCH -g GAP --stdout TEXT`` (the Debian package
``espeak-ng``) and reads its WAV (22,050 Hz) at 16 kHz. A voice is a language voice, optionally with a
variant after ``+`` (``en-us+f3``: American English, the third female variant); `speak` does not check the
name (espeak-ng falls back to its default voice for one it does not know): the voices here are checked
against ``espeak-ng --voices`` in the tests.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from qkv.data.audio import read_wav
from qkv.errors import QKVError

SPLITS = ("train", "test")

# ------------------------------------------------------------------------------------------------ numbers
_ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
         "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")


def number_words(n: int) -> str:
    """0..99 as words: 7 -> "seven", 25 -> "twenty five", 40 -> "forty"."""
    if not 0 <= n < 100:
        raise ValueError(f"number_words covers 0..99, got {n}")
    if n < 20:
        return _ONES[n]
    return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])


# ------------------------------------------------------------------------------------------------ the grammar
_HOURS = tuple(number_words(h) for h in range(1, 13))
SLOTS: dict[str, tuple[str, ...]] = {
    "duration": (
        *(f"{number_words(m)} minutes" for m in range(2, 60)), "one minute", "a minute", "half an hour",
        "an hour", *(f"{number_words(h)} hours" for h in range(2, 6)),
        *(f"{number_words(s)} seconds" for s in (10, 15, 20, 30, 40, 45)),
    ),
    "time": (
        *_HOURS, *(f"{h} {m}" for h in _HOURS for m in ("fifteen", "thirty", "forty five")),
        *(f"half past {h}" for h in _HOURS), *(f"quarter past {h}" for h in _HOURS),
        *(f"quarter to {h}" for h in _HOURS), "noon", "midnight",
    ),
    "part_of_day": ("in the morning", "in the afternoon", "in the evening", "tonight"),
    "day": ("today", "tomorrow", "tonight", "this weekend", "this morning", "this afternoon", "this evening",
            "on monday", "on tuesday", "on wednesday", "on thursday", "on friday", "on saturday",
            "on sunday"),
    "room": ("kitchen", "living room", "bedroom", "bathroom", "office", "garage", "hallway", "dining room",
             "basement"),
    "device": ("light", "lights", "lamp", "fan", "heater", "television", "radio"),
    "on_off": ("on", "off"),
    "up_down": ("up", "down"),
    "genre": ("jazz", "rock", "blues", "pop music", "country music", "classical music", "hip hop", "the news",
              "something relaxing"),
    "city": ("paris", "london", "tokyo", "berlin", "new york", "chicago", "boston", "madrid", "rome", "sydney"),
    "person": ("mom", "dad", "grandma", "my sister", "my brother", "the doctor", "sarah", "john", "anna", "david"),
    "task": ("call {person}", "buy milk", "pay the rent", "water the plants", "take out the trash",
             "pick up the kids", "feed the cat", "walk the dog", "take my medicine", "lock the door"),
    "item": ("eggs", "bread", "milk", "apples", "coffee", "rice", "bananas", "tomatoes", "orange juice", "pasta"),
    "degrees": tuple(f"{number_words(t)} degrees" for t in range(60, 81)),
    "level": tuple(number_words(v) for v in range(1, 11)),
    "percent": tuple(f"{number_words(p)} percent" for p in (10, 20, 25, 30, 40, 50, 60, 70, 75, 80, 90)),
    "door": ("front door", "back door", "garage door"),
}

# (template, held out for testing)
TEMPLATES: tuple[tuple[str, bool], ...] = (
    # timers and alarms
    ("set a timer for {duration}", False),
    ("cancel the timer", False),
    ("how much time is left on the timer", False),
    ("set an alarm for {time}", False),
    ("set an alarm for {time} {part_of_day}", False),
    ("wake me up at {time} {day}", True),
    ("start a timer for {duration} please", True),
    # lights and devices
    ("turn the {room} {device} {on_off}", False),
    ("turn {on_off} the {device} in the {room}", False),
    ("switch the {device} {on_off}", False),
    ("dim the {room} lights to {percent}", False),
    ("switch {on_off} the {room} {device}", True),
    ("make the {room} lights brighter", True),
    # music
    ("play some {genre}", False),
    ("play some {genre} in the {room}", False),
    ("stop the music in the {room}", False),
    ("pause the music", False),
    ("skip this song", False),
    ("turn the volume {up_down}", False),
    ("set the volume to {level}", False),
    ("put on some {genre} in the {room} please", True),
    ("play the next song", True),
    # weather and time
    ("what is the weather in {city} {day}", False),
    ("what is the weather like {day}", False),
    ("is it going to rain {day}", False),
    ("what time is it", False),
    ("what time is it in {city}", False),
    ("will it rain in {city} {day}", True),
    ("how cold is it in {city} right now", True),
    # reminders, calls and messages
    ("remind me to {task} at {time}", False),
    ("remind me to {task} {day}", False),
    ("call {person}", False),
    ("send a message to {person} saying i will be late", False),
    ("text {person} that i am on my way", True),
    ("remind me at {time} to {task}", True),
    # shopping and calendar
    ("add {item} to my shopping list", False),
    ("remove {item} from the shopping list", False),
    ("what is on my shopping list", False),
    ("what is on my calendar {day}", False),
    ("add a meeting with {person} {day} at {time}", False),
    ("put {item} on the shopping list", True),
    ("cancel my meeting with {person} {day}", True),
    # home
    ("set the thermostat to {degrees}", False),
    ("turn the heat {up_down} in the {room}", False),
    ("lock the {door}", False),
    ("is the {door} locked", False),
    ("open the {door}", False),
    ("make it warmer in the {room}", False),
    ("close the {door} please", True),
    ("change the temperature to {degrees}", True),
)
TRAIN_TEMPLATES = tuple(t for t, held_out in TEMPLATES if not held_out)
TEST_TEMPLATES = tuple(t for t, held_out in TEMPLATES if held_out)

_SLOT = re.compile(r"\{(\w+)\}")


def _templates(split: str) -> tuple[str, ...]:
    if split not in SPLITS:
        raise QKVError(f"unknown split {split!r}; one of {', '.join(SPLITS)}", argument="split")
    return TRAIN_TEMPLATES if split == "train" else TEST_TEMPLATES


def fill(template: str, rng: np.random.Generator) -> str:
    """`template` with every slot replaced by a random filler, the fillers' own slots too."""
    def one(m: re.Match) -> str:
        fillers = SLOTS[m[1]]
        return fill(fillers[int(rng.integers(len(fillers)))], rng)

    return _SLOT.sub(one, template)


def draw_sentence(rng: np.random.Generator, split: str) -> tuple[str, str]:
    """(sentence, its template): a template of `split` ("train" or "test"), then its slots, evenly."""
    templates = _templates(split)
    template = templates[int(rng.integers(len(templates)))]
    return fill(template, rng), template


def sentences(rng: np.random.Generator, n: int, split: str) -> list[str]:
    """`n` sentences from the templates of `split`."""
    return [draw_sentence(rng, split)[0] for _ in range(n)]


def _words(text: str) -> set[str]:
    """The words `text` can produce: its own, and every filler's of every slot it names."""
    words = set(_SLOT.sub(" ", text).split())
    for name in _SLOT.findall(text):
        for filler in SLOTS[name]:
            words |= _words(filler)
    return words


def vocabulary(split: str | None = None) -> set[str]:
    """Every word a sentence of `split` (None: of either) can hold."""
    templates = TRAIN_TEMPLATES + TEST_TEMPLATES if split is None else _templates(split)
    return set().union(*(_words(t) for t in templates))


# ------------------------------------------------------------------------------------------------ voices
TRAIN_VOICES = (
    "en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan",
    "en-us+f2", "en-gb+f4", "en-us+m3", "en-gb-scotland+m2", "en-gb-x-rp+f1", "en-029+m4",
    "en-us+klatt", "en-gb+klatt3", "en-us+m6", "en-gb-x-gbclan+f5",
)
TEST_VOICES = (  # accents (New York City, West Midlands) and variants (f3, m7, klatt2) no training voice has
    "en-us-nyc", "en-gb-x-gbcwmd", "en-us+f3", "en-gb+m7", "en-gb-x-rp+klatt2",
)
RATE = (130, 200)  # words per minute
PITCH = (30, 70)  # 0-99, espeak-ng's default 50
GAP = (0, 5)  # extra pause between words, in units of 10 ms at the default rate


def draw_voice(rng: np.random.Generator, split: str) -> dict:
    """A voice of `split` and a speaking rate, pitch and word gap, each an even draw (ranges inclusive)."""
    if split not in SPLITS:
        raise QKVError(f"unknown split {split!r}; one of {', '.join(SPLITS)}", argument="split")
    voices = TRAIN_VOICES if split == "train" else TEST_VOICES
    return {"voice": voices[int(rng.integers(len(voices)))], "rate": int(rng.integers(RATE[0], RATE[1] + 1)),
            "pitch": int(rng.integers(PITCH[0], PITCH[1] + 1)), "gap": int(rng.integers(GAP[0], GAP[1] + 1))}


# ------------------------------------------------------------------------------------------------ synthesis
_MISSING = "espeak-ng is not installed: apt-get install espeak-ng"


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def speak(text: str, voice: str = "en-us", rate: int = 160, pitch: int = 50, gap: int = 0) -> torch.Tensor:
    """`text` spoken by espeak-ng: a wave (N,) float32 at 16 kHz."""
    if not text.strip():
        raise QKVError("nothing to speak: the text is empty")
    command = ["espeak-ng", "-v", voice, "-s", str(rate), "-p", str(pitch), "-g", str(gap), "--stdout", "--", text]
    try:
        done = subprocess.run(command, capture_output=True, timeout=30)
    except FileNotFoundError:
        raise QKVError(_MISSING) from None
    except subprocess.TimeoutExpired:
        raise QKVError(f"espeak-ng took over 30 s to speak {text[:40]!r}") from None
    if done.returncode != 0 or len(done.stdout) <= 44:
        why = " ".join(done.stderr.decode("utf-8", "replace").split()) or f"exit code {done.returncode}, no audio"
        raise QKVError(f"espeak-ng -v {voice} failed: {why}")
    wave, _ = read_wav(_with_true_sizes(done.stdout), name=f"espeak-ng -v {voice}")
    return wave


def _with_true_sizes(wav: bytes) -> bytes:
    """A WAV written to a pipe has sizes it could not know (espeak-ng writes ~2**31): set the RIFF size and
    the data chunk's size to what the bytes hold."""
    if wav[:4] != b"RIFF" or wav[8:12] != b"WAVE":
        return wav
    out = bytearray(wav)
    out[4:8] = struct.pack("<I", len(wav) - 8)
    pos = 12
    while pos + 8 <= len(wav):
        chunk, size = wav[pos:pos + 4], struct.unpack_from("<I", wav, pos + 4)[0]
        if chunk == b"data":
            out[pos + 4:pos + 8] = struct.pack("<I", len(wav) - pos - 8)
            break
        pos += 8 + size + (size & 1)
    return bytes(out)


def utterances(rng: np.random.Generator, n: int, split: str, workers: int = 2
               ) -> Iterator[tuple[torch.Tensor, str, dict]]:
    """`n` spoken commands of `split`: (wave at 16 kHz, text, meta {"voice", "rate", "pitch", "gap",
    "template"}), in order. Every draw is made here, up front, so the output depends on `rng` alone; the
    waves are made as they are read, by `workers` espeak-ng processes at once."""
    if not espeak_available():
        raise QKVError(_MISSING)
    draws = []
    for _ in range(n):
        text, template = draw_sentence(rng, split)
        draws.append((text, draw_voice(rng, split), template))
    return _spoken(draws, max(1, workers))


def _spoken(draws: list[tuple[str, dict, str]], workers: int) -> Iterator[tuple[torch.Tensor, str, dict]]:
    """The waves of `draws` in order, at most 2 x `workers` made ahead of the reader."""
    with ThreadPoolExecutor(workers) as pool:
        ahead: deque = deque()
        for text, voice, template in draws:
            ahead.append((pool.submit(speak, text, **voice), text, {**voice, "template": template}))
            if len(ahead) > 2 * workers:
                future, text_, meta = ahead.popleft()
                yield future.result(), text_, meta
        while ahead:
            future, text_, meta = ahead.popleft()
            yield future.result(), text_, meta
