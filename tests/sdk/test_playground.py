"""The playground at `/`, driven in a real headless Chromium (Debian's `chromium`
and `chromium-driver`): a streamed chat answer, a completion with a suffix,
embeddings similarity, a moderation with its scores, a WAV file transcribed; the
key kept in localStorage; tabs by keyboard; no sideways scrolling on a narrow screen.
Set HEARTH_SCREENSHOT=path to keep a screenshot (README's is docs/playground.png)."""
import os
import shutil
import subprocess

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from conftest import API_KEY

WAIT_S = 180


@pytest.fixture(scope="module")
def browser():
    binary = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    if not binary or not driver_path:
        pytest.fail("chromium and chromium-driver are needed (scripts/test.sh installs them)")
    options = Options()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver, condition, what):
    return WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(condition, message=what)


def field(driver, id_, text):
    el = driver.find_element(By.ID, id_)
    el.clear()
    el.send_keys(text)
    return el


def tab(driver, name):
    driver.find_element(By.ID, f"tab-{name}").click()


def no_error(driver):
    status = driver.find_element(By.ID, "status")
    assert not status.is_displayed(), status.text


def test_playground(browser, server, tmp_path):
    d = browser
    d.get(server + "/")
    assert d.title == "hearth playground"
    # The key: typed once, kept in this browser, used for the model list.
    field(d, "api-key", API_KEY).send_keys(Keys.TAB)
    wait(d, lambda d: d.find_element(By.ID, "chat-model").get_attribute("value") == "gpt-3.5-turbo", "models listed")
    assert d.execute_script("return localStorage.getItem('hearth.apiKey')") == API_KEY

    # Chat: the answer appears piece by piece (each streamed delta changes the page).
    field(d, "chat-max-tokens", "24")
    field(d, "chat-temperature", "0")
    field(d, "chat-input", "Say hello in one short sentence.")
    d.execute_script(
        "window.updates = 0; new MutationObserver((records) => { window.updates += records.length; })"
        ".observe(document.getElementById('chat-log'), {childList: true, subtree: true, characterData: true});"
    )
    d.find_element(By.ID, "chat-send").click()
    wait(d, lambda d: d.find_element(By.ID, "chat-send").is_enabled() and d.find_elements(By.CSS_SELECTOR, "#chat-log li.assistant"), "the chat answer")
    no_error(d)
    answer = d.find_element(By.CSS_SELECTOR, "#chat-log li.assistant .content").text
    assert answer.strip(), "an answer"
    # Two messages added, then one change per streamed piece of the answer.
    assert d.execute_script("return window.updates") > 3, "the answer was streamed"
    if os.environ.get("HEARTH_SCREENSHOT"):
        d.save_screenshot(os.environ["HEARTH_SCREENSHOT"])

    # Tabs follow the arrow keys.
    d.find_element(By.ID, "tab-chat").send_keys(Keys.ARROW_RIGHT)
    assert d.find_element(By.ID, "tab-completions").get_attribute("aria-selected") == "true"
    assert d.switch_to.active_element.get_attribute("id") == "tab-completions"

    # Completions with a suffix: the inserted text is shown between prompt and suffix.
    field(d, "completion-max-tokens", "12")
    d.find_element(By.CSS_SELECTOR, "#completion-form button[type=submit]").click()
    wait(d, lambda d: d.find_element(By.CSS_SELECTOR, "#completion-output .inserted").text.strip(), "the inserted completion")
    wait(d, lambda d: d.find_element(By.CSS_SELECTOR, "#completion-form button[type=submit]").is_enabled(), "the completion ends")
    no_error(d)
    assert d.find_element(By.ID, "completion-output").text.rstrip().endswith("print(fibonacci(10))")

    # Embeddings: two similar sentences.
    tab(d, "embeddings")
    d.find_element(By.CSS_SELECTOR, "#embedding-form button[type=submit]").click()
    wait(d, lambda d: "Cosine similarity" in d.find_element(By.ID, "embedding-output").text, "the similarity")
    similarity = float(d.find_element(By.ID, "embedding-output").text.split(": ")[1].split(" ")[0])
    assert 0.5 < similarity <= 1.0001

    # Moderation: a threat, its category scores listed.
    tab(d, "moderation")
    field(d, "moderation-input", "I am going to kill you and your whole family.")
    d.find_element(By.CSS_SELECTOR, "#moderation-form button[type=submit]").click()
    wait(d, lambda d: d.find_element(By.ID, "moderation-scores").is_displayed(), "the scores")
    no_error(d)
    rows = d.find_elements(By.CSS_SELECTOR, "#moderation-scores tbody tr")
    assert len(rows) >= 11
    scores = {r.find_elements(By.TAG_NAME, "td")[0].text: float(r.find_elements(By.TAG_NAME, "td")[1].text) for r in rows}
    assert all(0.0 <= s <= 1.0 for s in scores.values())
    assert d.find_element(By.ID, "moderation-flagged").text == "Flagged"
    assert max(scores["violence"], scores["harassment/threatening"]) > 0.5, scores

    # Audio: a WAV file spoken by espeak-ng, transcribed.
    wav = tmp_path / "fox.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(wav), "The quick brown fox jumps over the lazy dog."], check=True)
    tab(d, "audio")
    d.find_element(By.ID, "audio-file").send_keys(str(wav))
    d.find_element(By.ID, "audio-send").click()
    wait(d, lambda d: d.find_element(By.ID, "audio-output").text not in ("", "…"), "the transcript")
    no_error(d)
    transcript = d.find_element(By.ID, "audio-output").text.lower()
    assert "fox" in transcript and "dog" in transcript, transcript

    # A narrow screen: nothing scrolls sideways.
    d.set_window_size(390, 844)
    tab(d, "chat")
    assert d.execute_script("return document.documentElement.scrollWidth <= document.documentElement.clientWidth")


def test_playground_assets_are_served_without_a_key(server):
    import httpx

    page = httpx.get(server + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/playground/app.js", "/playground/style.css"):
        assert httpx.get(server + asset).status_code == 200
    # Nothing is fetched from elsewhere.
    assert "http://" not in page.text and "https://" not in page.text
