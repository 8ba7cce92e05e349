"""The TwiML documents of a call, built with the SDK's VoiceResponse (which escapes all text)."""
from twilio.twiml.voice_response import VoiceResponse

DEFAULT_GREETING = "Hello, this is BRAIN. How can I help you?"
DEFAULT_FILLER = "One moment, please."
DEFAULT_GOODBYE = "Goodbye."
SAY_CHUNK = 3000  # well under Twilio's limit for one <Say>


def chunks(text, size=SAY_CHUNK):
    """Split long text at whitespace into pieces of at most `size` characters."""
    text = " ".join(text.split())
    while len(text) > size:
        cut = text.rfind(" ", 0, size)
        cut = cut if cut > 0 else size
        yield text[:cut]
        text = text[cut:].lstrip()
    if text:
        yield text


class Speaker:
    def __init__(self, config):
        self.config = config
        self.say_options = {k: config[k] for k in ("voice", "language") if config.get(k)}

    def _say(self, verb, text):
        for piece in chunks(text):
            verb.say(piece, **self.say_options)

    def _gather(self, response, action, prompt=None):
        gather = response.gather(
            input="speech",
            action=action,
            method="POST",
            speech_timeout="auto",
            timeout=int(self.config.get("gather_timeout", 5)),
            action_on_empty_result=True,
            **({"language": self.config["language"]} if self.config.get("language") else {}),
        )
        if prompt:
            self._say(gather, prompt)
        # Reached only if the Gather ends without calling its action: counts as silence there.
        response.redirect(action, method="POST")
        return response

    def greeting(self, action):
        return self._gather(VoiceResponse(), action, self.config.get("greeting") or DEFAULT_GREETING)

    def listen(self, action):
        return self._gather(VoiceResponse(), action)

    def reprompt(self, action):
        return self._gather(VoiceResponse(), action, "Sorry, I did not hear anything. What can I do for you?")

    def reply(self, text, action):
        response = VoiceResponse()
        self._say(response, text)
        return self._gather(response, action)

    def hold(self, redirect, first):
        response = VoiceResponse()
        if first:
            self._say(response, self.config.get("filler") or DEFAULT_FILLER)
        response.redirect(redirect, method="POST")
        return response

    def apology(self, action, too_slow=False):
        text = (
            "Sorry, this is taking too long. Please ask again."
            if too_slow
            else "Sorry, I cannot answer that right now."
        )
        response = VoiceResponse()
        self._say(response, text)
        return self._gather(response, action)

    def goodbye(self, after_silence=False):
        response = VoiceResponse()
        if after_silence:
            self._say(response, "I did not hear anything.")
        self._say(response, self.config.get("goodbye") or DEFAULT_GOODBYE)
        response.hangup()
        return response

    def unavailable(self):
        response = VoiceResponse()
        self._say(response, "Sorry, this line is not available right now. Please try again later.")
        response.hangup()
        return response

    # --- outbound notifications ---
    def notification(self, text, ack_url=None):
        response = VoiceResponse()
        if not ack_url:
            self._say(response, text)
            return response
        gather = response.gather(input="dtmf", num_digits=1, action=ack_url, method="POST", timeout=8)
        self._say(gather, text)
        self._say(gather, "Press 1 to acknowledge.")
        self._say(response, DEFAULT_GOODBYE)
        response.hangup()
        return response

    def ask_ack_again(self, ack_url):
        response = VoiceResponse()
        gather = response.gather(input="dtmf", num_digits=1, action=ack_url, method="POST", timeout=8)
        self._say(gather, "Press 1 to acknowledge this message.")
        self._say(response, DEFAULT_GOODBYE)
        response.hangup()
        return response

    def acknowledged(self):
        response = VoiceResponse()
        self._say(response, "Thank you, your acknowledgement is recorded. Goodbye.")
        response.hangup()
        return response
