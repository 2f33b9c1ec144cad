"""A fake driver and its model, for framework tests that must not depend on a real driver."""
from labctl.instrument.base import Component, Instrument, Setting, on_off
from sim_instruments.models.base import DeviceModel


class FakeChannel(Component):
    voltage = Setting("V{ch}?", "V{ch} {value}", unit="V", limits=(-10.0, 10.0))
    output = Setting("O{ch}?", "O{ch} {value}", mapping=on_off())


class FakeSource(Instrument):
    model = "Fake source"
    roles = ("analog_out",)
    components = {"ch1": (FakeChannel, {"ch": 1}), "ch2": (FakeChannel, {"ch": 2})}
    simulator = "fakes:FakeSourceModel"
    current = Setting("I?", "I {value}", unit="A", limits=(0.0, 0.1))

    def safe_state(self):
        self.ch1.output = False
        self.ch2.output = False


class FakeSourceModel(DeviceModel):
    def __init__(self, name="", **kw):
        super().__init__(name, **kw)
        self.state = {"V1": 0.0, "V2": 0.0, "O1": "OFF", "O2": "OFF", "I": 0.0}
        self.errors = []

    def handle(self, message):
        if message == "*IDN?":
            return f"FAKE,SOURCE,{self.name},1.0"
        if message == "SYSTem:ERRor?":
            return self.errors.pop(0) if self.errors else '0,"No error"'
        if message.endswith("?") and message[:-1] in self.state:
            return str(self.state[message[:-1]])
        key, _, value = message.partition(" ")
        if key in self.state and value:
            self.state[key] = value
            return None
        self.errors.append('-113,"Undefined header"')
        return None
