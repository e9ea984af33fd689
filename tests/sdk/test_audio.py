"""Audio through the official SDK: client.audio.transcriptions / translations.
Speech is made by espeak-ng (and ffmpeg for mp3) from sentences written here."""
import re
import subprocess

import openai
import pytest

SENTENCE = "The garden gate was painted green by my grandfather last summer."


def _words(text):
    return re.findall(r"[a-z']+", text.lower())


def _speak(tmp_path, text, voice="en-us", ext="wav"):
    wav = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(wav), text], check=True)
    if ext == "wav":
        return wav
    out = tmp_path / f"speech.{ext}"
    codec = ["-c:a", "libopus"] if ext == "webm" else []
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(wav), *codec, str(out)], check=True)
    return out


def test_transcription_sdk(client, contract, tmp_path):
    path = _speak(tmp_path, SENTENCE, ext="mp3")
    with open(path, "rb") as f:
        raw = client.audio.transcriptions.with_raw_response.create(model="whisper-1", file=f)
    contract.validate("CreateTranscriptionResponse", raw.http_response.json())
    heard = set(_words(raw.parse().text))
    # Most words, not all: espeak-ng's voice is misheard now and then.
    assert len(heard & set(_words(SENTENCE))) >= len(_words(SENTENCE)) * 0.7, raw.parse().text


def test_transcription_sdk_browser_recording(client, tmp_path):
    """webm with Opus audio: what a browser's MediaRecorder uploads."""
    path = _speak(tmp_path, SENTENCE, ext="webm")
    with open(path, "rb") as f:
        text = client.audio.transcriptions.create(model="whisper-1", file=f).text
    assert len(set(_words(text)) & set(_words(SENTENCE))) >= len(_words(SENTENCE)) * 0.7, text


def test_transcription_sdk_formats(client, tmp_path):
    path = _speak(tmp_path, SENTENCE)
    with open(path, "rb") as f:
        srt = client.audio.transcriptions.create(model="whisper-tiny.en", file=f, response_format="srt")
    # The first cue starts at the first word (espeak starts speaking at once).
    assert isinstance(srt, str) and re.match(r"1\n00:00:00,[0-9]{3} --> 00:00:0[0-9],[0-9]{3}\n\S", srt), srt
    with open(path, "rb") as f:
        verbose = client.audio.transcriptions.create(
            model="whisper-tiny.en", file=f, response_format="verbose_json", timestamp_granularities=["word", "segment"]
        )
    assert verbose.language == "english"
    assert verbose.segments and verbose.words
    assert verbose.words[-1].end <= verbose.duration + 0.5


def test_translation_sdk(client, contract, tmp_path):
    """German speech whose English rendering is known by its nouns: a plain
    transcription (Vater, Brot, Milch, Mutter, Kaffee, Küche) names none of them."""
    # Read at temperature 0 with confidence, so no sampled fallback decides the words.
    german = "Mein Vater kauft Brot und Milch. Meine Mutter kocht Kaffee in der Küche."
    path = _speak(tmp_path, german, voice="de")
    with open(path, "rb") as f:
        raw = client.audio.translations.with_raw_response.create(model="whisper-1", file=f)
    contract.validate("CreateTranslationResponse", raw.http_response.json())
    found = {"father", "mother", "bread", "milk", "coffee", "kitchen"} & set(_words(raw.parse().text))
    assert len(found) >= 4, raw.parse().text


def test_audio_errors_sdk(client, tmp_path):
    bogus = tmp_path / "notes.mp3"
    bogus.write_text("this is not audio\n" * 20)
    with open(bogus, "rb") as f, pytest.raises(openai.BadRequestError) as e:
        client.audio.transcriptions.create(model="whisper-1", file=f)
    assert e.value.body["param"] == "file"
    path = _speak(tmp_path, SENTENCE)
    with open(path, "rb") as f, pytest.raises(openai.BadRequestError):
        client.audio.transcriptions.create(model="whisper-1", file=f, response_format="xml")
