"""Register access to one I2C part over ``machine.I2C`` or ``smbus2.SMBus``.

The bus is duck-typed, the way micropython-lib's lsm6dsox driver does it: an
object with ``readfrom_mem_into`` is a MicroPython ``machine.I2C`` (or the
simulator's ``sim.bus.I2CBus``); one with ``read_i2c_block_data`` is an
smbus2 ``SMBus`` on Linux (a Raspberry Pi).

Byte order: the parts here send 16-bit registers MSB first, but an SMBus
"word" is little-endian on the wire, so :meth:`I2CRegs.read_u16` swaps the
bytes of ``read_word_data`` (and :meth:`I2CRegs.write_u16` of
``write_word_data``).

Faults: every transfer is retried up to ``retries`` times; if it still fails
the last ``OSError`` is raised again with the part's name and address in the
message (errno kept: 19 ENODEV on MicroPython, 121 EREMOTEIO on Linux for a
missing part, 110 ETIMEDOUT for a stuck bus).  ``errors`` counts the failed
attempts, retried or not.
"""

from firmware.hw.compat import const

_SMBUS_BLOCK_MAX = const(32)


class I2CRegs:
    def __init__(self, bus, address, part_name, retries=3):
        if hasattr(bus, "readfrom_mem_into"):
            self._smbus = False
        elif hasattr(bus, "read_i2c_block_data"):
            self._smbus = True
        else:
            raise ValueError("%s: bus must look like machine.I2C or smbus2.SMBus" % part_name)
        if not isinstance(address, int) or not 0x08 <= address <= 0x77:
            raise ValueError("%s: I2C address must be 0x08..0x77, got %r" % (part_name, address))
        if not isinstance(retries, int) or retries < 1:
            raise ValueError("%s: retries must be an int >= 1" % part_name)
        self.bus = bus
        self.address = address
        self.part_name = part_name
        self.retries = retries
        self.errors = 0
        self._one = bytearray(1)
        self._two = bytearray(2)

    @property
    def is_smbus(self):
        return self._smbus

    def _fail(self, exc):
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 5  # EIO
        return OSError(code, "%s at 0x%02x: I2C transfer failed after %d tries (errno %d)"
                       % (self.part_name, self.address, self.retries, code))

    def read_into(self, reg, buf):
        """Read ``len(buf)`` bytes starting at register ``reg`` into ``buf``.

        On smbus2 the block read returns a new list (smbus2 has no readinto);
        it is copied into ``buf`` in chunks of at most 32 bytes (reads of a
        FIFO register, whose pointer does not move, stay correct)."""
        last = None
        for _ in range(self.retries):
            try:
                if not self._smbus:
                    self.bus.readfrom_mem_into(self.address, reg, buf)
                    return
                n = len(buf)
                pos = 0
                while pos < n:
                    k = n - pos
                    if k > _SMBUS_BLOCK_MAX:
                        k = _SMBUS_BLOCK_MAX
                    data = self.bus.read_i2c_block_data(self.address, reg, k)
                    for i in range(k):
                        buf[pos + i] = data[i]
                    pos += k
                return
            except OSError as exc:
                self.errors += 1
                last = exc
        raise self._fail(last)

    def write(self, reg, buf):
        last = None
        for _ in range(self.retries):
            try:
                if self._smbus:
                    self.bus.write_i2c_block_data(self.address, reg, list(buf))
                else:
                    self.bus.writeto_mem(self.address, reg, buf)
                return
            except OSError as exc:
                self.errors += 1
                last = exc
        raise self._fail(last)

    def read_u8(self, reg):
        if self._smbus:
            last = None
            for _ in range(self.retries):
                try:
                    return self.bus.read_byte_data(self.address, reg)
                except OSError as exc:
                    self.errors += 1
                    last = exc
            raise self._fail(last)
        self.read_into(reg, self._one)
        return self._one[0]

    def write_u8(self, reg, value):
        if self._smbus:
            last = None
            for _ in range(self.retries):
                try:
                    self.bus.write_byte_data(self.address, reg, value & 0xFF)
                    return
                except OSError as exc:
                    self.errors += 1
                    last = exc
            raise self._fail(last)
        self._one[0] = value & 0xFF
        self.write(reg, self._one)

    def read_u16(self, reg):
        """A 16-bit register sent MSB first, as an unsigned int."""
        if self._smbus:
            last = None
            for _ in range(self.retries):
                try:
                    w = self.bus.read_word_data(self.address, reg)
                    return ((w & 0xFF) << 8) | (w >> 8)  # SMBus words are LSB first
                except OSError as exc:
                    self.errors += 1
                    last = exc
            raise self._fail(last)
        buf = self._two
        self.read_into(reg, buf)
        return (buf[0] << 8) | buf[1]

    def read_s16(self, reg):
        v = self.read_u16(reg)
        return v - 0x10000 if v & 0x8000 else v

    def write_u16(self, reg, value):
        value &= 0xFFFF
        if self._smbus:
            last = None
            for _ in range(self.retries):
                try:
                    swapped = ((value & 0xFF) << 8) | (value >> 8)  # SMBus: LSB first
                    self.bus.write_word_data(self.address, reg, swapped)
                    return
                except OSError as exc:
                    self.errors += 1
                    last = exc
            raise self._fail(last)
        self._two[0] = value >> 8
        self._two[1] = value & 0xFF
        self.write(reg, self._two)
