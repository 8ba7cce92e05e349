"""BRAIN backends for the Twilio tests (set through settings.BRAIN_BACKEND): small real classes."""
import threading
import time


class NoReplyBrain:
    """BRAIN that reads and says nothing (no reply is sent)."""

    def reply(self, request):
        return None


class FailingBrain:
    def reply(self, request):
        from connectors.delivery.brain import BrainError

        raise BrainError("BRAIN is down for the test", code="brain_unavailable")


class SlowBrain:
    """Answers after `delay` seconds."""

    delay = 1.0

    def reply(self, request):
        time.sleep(SlowBrain.delay)
        return f"Slowly: {request.content}"


class GatedBrain:
    """Answers only once the test opens `gate` (or after `max_wait` seconds, so nothing hangs)."""

    gate = threading.Event()
    max_wait = 15.0
    asked = threading.Event()

    def reply(self, request):
        GatedBrain.asked.set()
        GatedBrain.gate.wait(GatedBrain.max_wait)
        return f"After thinking: {request.content}"

    @classmethod
    def reset(cls):
        cls.gate = threading.Event()
        cls.asked = threading.Event()
