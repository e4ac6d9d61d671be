import fc from 'fast-check';
import { MESSAGE_SKIPPED, toUtcIso, type RocketMessage } from '../../src/domain/message';
import { evolve, evolveAt, MAX_SPEED, withUtcTimes, type Rocket } from '../../src/domain/rocket';
import { rocket, timeOf } from '../support/telemetry';

/**
 * Given/when/then over `evolve`, after emmett's DeciderSpecification: the history is folded in order,
 * then one more message is applied and the resulting state is compared in full.
 */
function given(...history: RocketMessage[]) {
  const before = history.reduce<Rocket | undefined>((state, m) => evolve(state, m), undefined);
  return {
    when(m: RocketMessage) {
      const after = evolve(before, m);
      return {
        then(expected: Rocket): void {
          expect(after).toStrictEqual(expected);
        },
        /** The message is recorded (its number and time move on) and no other field changes. */
        thenOnlyRecords(): void {
          expect(before).toBeDefined();
          expect(after).toStrictEqual({
            ...before,
            updatedAt: toUtcIso(m.messageTime),
            lastMessageNumber: m.messageNumber,
          });
        },
      };
    },
  };
}

const r = rocket('rocket-1');

/** The state after `r.launched(1)`, with the fields a test expects to differ. */
const launchedRocket = (changes: Partial<Rocket> = {}): Rocket => ({
  channel: 'rocket-1',
  type: 'Falcon-9',
  mission: 'ARTEMIS',
  speed: 500,
  status: 'flying',
  explodedReason: null,
  launchedAt: timeOf(1),
  updatedAt: timeOf(1),
  lastMessageNumber: 1,
  ...changes,
});

const at = (n: number) => ({ updatedAt: timeOf(n), lastMessageNumber: n });

describe('evolve', () => {
  /** A MessageSkipped, as the gap policy records it. */
  const skipped = (n: number, time = '2024-05-01T12:00:00.000Z'): RocketMessage => ({
    channel: 'rocket-1',
    messageNumber: n,
    messageTime: time,
    messageType: MESSAGE_SKIPPED,
    payload: { reason: 'not received within GAP_TIMEOUT (30s)' },
  });

  describe('RocketLaunched', () => {
    it('creates a flying rocket with its type, mission and launch speed', () => {
      given().when(r.launched(1)).then(launchedRocket());
    });

    it('records the launch time in UTC, whatever offset the sender used', () => {
      given()
        .when(r.launched(1, {}, '2022-02-02T19:39:05.86337+01:00'))
        .then(
          launchedRocket({
            launchedAt: '2022-02-02T18:39:05.863Z',
            updatedAt: '2022-02-02T18:39:05.863Z',
          }),
        );
    });

    it('launches at speed zero when told to', () => {
      given()
        .when(r.launched(1, { launchSpeed: 0 }))
        .then(launchedRocket({ speed: 0 }));
    });

    it('changes nothing the second time: a rocket launches once', () => {
      given(r.launched(1))
        .when(r.launched(2, { type: 'Starship', launchSpeed: 9000, mission: 'MARS' }))
        .thenOnlyRecords();
    });

    it('does not reset the speed or mission gathered since the first launch', () => {
      given(r.launched(1), r.increased(2, 100), r.missionChanged(3, 'GATEWAY'))
        .when(r.launched(4))
        .then(launchedRocket({ speed: 600, mission: 'GATEWAY', ...at(4) }));
    });

    it('after messages that came before it, sets the rocket as it left the pad from its own payload', () => {
      given(r.increased(1, 7), r.missionChanged(2, 'EARLY'))
        .when(r.launched(3, { launchSpeed: 100 }))
        .then(launchedRocket({ speed: 100, mission: 'ARTEMIS', launchedAt: timeOf(3), ...at(3) }));
    });
  });

  describe('RocketSpeedIncreased', () => {
    it('adds to the speed', () => {
      given(r.launched(1))
        .when(r.increased(2, 3000))
        .then(launchedRocket({ speed: 3500, ...at(2) }));
    });

    it('by zero only records the message', () => {
      given(r.launched(1)).when(r.increased(2, 0)).thenOnlyRecords();
    });

    it('holds the rocket at MAX_SPEED (2^53 - 1), past which a unit could vanish', () => {
      const max = Number.MAX_SAFE_INTEGER;
      expect(MAX_SPEED).toBe(max);
      given(r.launched(1, { launchSpeed: max }), r.increased(2, max))
        .when(r.increased(3, 1))
        .then(launchedRocket({ speed: max, ...at(3) }));
      given(r.launched(1, { launchSpeed: max - 1 }))
        .when(r.increased(2, 5))
        .then(launchedRocket({ speed: max, ...at(2) }));
    });

    it('leaves no hidden surplus: a decrease after a held increase counts from MAX_SPEED', () => {
      given(r.launched(1, { launchSpeed: MAX_SPEED }), r.increased(2, MAX_SPEED))
        .when(r.decreased(3, 1))
        .then(launchedRocket({ speed: MAX_SPEED - 1, ...at(3) }));
    });

    it('holds a launch speed above MAX_SPEED (which validation refuses) at MAX_SPEED as well', () => {
      const valid = r.launched(1);
      const payload = { ...valid.payload, launchSpeed: 1e300 };
      const unchecked = { ...valid, payload } as RocketMessage;
      expect(evolve(undefined, unchecked).speed).toBe(MAX_SPEED);
    });
  });

  describe('RocketSpeedDecreased', () => {
    it('subtracts from the speed', () => {
      given(r.launched(1))
        .when(r.decreased(2, 200))
        .then(launchedRocket({ speed: 300, ...at(2) }));
    });

    it('can bring the rocket exactly to zero', () => {
      given(r.launched(1))
        .when(r.decreased(2, 500))
        .then(launchedRocket({ speed: 0, ...at(2) }));
    });

    it('stops the rocket at zero when it would go below', () => {
      given(r.launched(1))
        .when(r.decreased(2, 10_000))
        .then(launchedRocket({ speed: 0, ...at(2) }));
    });

    it('leaves no hidden debt: an increase after a clamped decrease counts from zero', () => {
      given(r.launched(1), r.decreased(2, 10_000))
        .when(r.increased(3, 50))
        .then(launchedRocket({ speed: 50, ...at(3) }));
    });

    it('keeps a stopped rocket at zero', () => {
      given(r.launched(1, { launchSpeed: 0 }))
        .when(r.decreased(2, 1))
        .then(launchedRocket({ speed: 0, ...at(2) }));
    });
  });

  describe('RocketMissionChanged', () => {
    it('replaces the mission and nothing else', () => {
      given(r.launched(1), r.increased(2, 1))
        .when(r.missionChanged(3, 'SHUTTLE_MIR'))
        .then(launchedRocket({ speed: 501, mission: 'SHUTTLE_MIR', ...at(3) }));
    });
  });

  describe('RocketExploded', () => {
    it('marks the rocket exploded with its reason, keeping its last speed and mission', () => {
      given(r.launched(1), r.increased(2, 20))
        .when(r.exploded(3, 'PRESSURE_VESSEL_FAILURE'))
        .then(launchedRocket({ speed: 520, status: 'exploded', explodedReason: 'PRESSURE_VESSEL_FAILURE', ...at(3) }));
    });

    it('keeps the first reason when a second explosion is reported', () => {
      given(r.launched(1), r.exploded(2, 'FIRST')).when(r.exploded(3, 'SECOND')).thenOnlyRecords();
    });

    it.each([
      ['an increase', r.increased(3, 100)],
      ['a decrease', r.decreased(3, 100)],
      ['a mission change', r.missionChanged(3, 'AFTERLIFE')],
      ['a launch', r.launched(3, { type: 'Phoenix', launchSpeed: 1, mission: 'AGAIN' })],
    ])('afterwards records %s but changes nothing', (_, later) => {
      given(r.launched(1), r.exploded(2, 'BOOM')).when(later).thenOnlyRecords();
    });

    it('before any launch leaves the rocket exploded, and a later launch changes nothing', () => {
      given(r.exploded(1, 'ON_THE_PAD'))
        .when(r.launched(2))
        .then({
          channel: 'rocket-1',
          type: null,
          mission: null,
          speed: 0,
          status: 'exploded',
          explodedReason: 'ON_THE_PAD',
          launchedAt: null,
          ...at(2),
        });
    });
  });

  describe('MessageSkipped', () => {
    it('only records the number and the time of the skip', () => {
      given(r.launched(1), r.increased(2, 100)).when(skipped(3)).thenOnlyRecords();
    });

    it('records the number on an exploded rocket and changes nothing else', () => {
      given(r.launched(1), r.exploded(2, 'BOOM')).when(skipped(3)).thenOnlyRecords();
    });

    it('starts a rocket with nothing known but its number when it is the first message', () => {
      given().when(skipped(1)).then({
        channel: 'rocket-1',
        type: null,
        mission: null,
        speed: 0,
        status: 'flying',
        explodedReason: null,
        launchedAt: null,
        updatedAt: '2024-05-01T12:00:00.000Z',
        lastMessageNumber: 1,
      });
    });
  });

  describe('every message', () => {
    it('moves updatedAt to its own time, even when that time is earlier than the previous one', () => {
      given(r.launched(1, {}, '2022-02-02T20:00:00Z'))
        .when(r.increased(2, 1, '2022-02-02T19:00:00+01:00'))
        .then(
          launchedRocket({
            speed: 501,
            launchedAt: '2022-02-02T20:00:00.000Z',
            updatedAt: '2022-02-02T18:00:00.000Z',
            lastMessageNumber: 2,
          }),
        );
    });

    it('leaves type, mission and launch time empty until a launch arrives', () => {
      given()
        .when(r.missionChanged(1, 'EARLY'))
        .then({
          channel: 'rocket-1',
          type: null,
          mission: 'EARLY',
          speed: 0,
          status: 'flying',
          explodedReason: null,
          launchedAt: null,
          ...at(1),
        });
    });

    it('never changes the state it was given, and answers a new one', () => {
      const launched = evolve(undefined, r.launched(1));
      const states = [launched, evolve(launched, r.exploded(2, 'EARLY')), evolve(undefined, r.increased(1, 3))];
      const next = [
        r.launched(3),
        r.increased(3, 1),
        r.decreased(3, 9999),
        r.missionChanged(3, 'X'),
        r.exploded(3, 'Y'),
        skipped(3),
      ];
      for (const state of states) {
        const before = Object.freeze(state);
        const copy = { ...before };
        for (const m of next) {
          // A frozen object throws on a write in strict mode, so any write to `before` would fail here.
          const after = evolve(before, m);
          expect(after).not.toBe(before);
          expect(after.lastMessageNumber).toBe(3);
        }
        expect(before).toStrictEqual(copy);
      }
    });

    it('rebuilds the same state from the same history, so a replay of the log is exact', () => {
      const history = [
        r.launched(1),
        r.increased(2, 7),
        r.decreased(3, 900),
        r.missionChanged(4, 'Z'),
        r.exploded(5, 'Q'),
      ];
      const fold = () => history.reduce<Rocket | undefined>((s, m) => evolve(s, m), undefined);
      expect(fold()).toStrictEqual(fold());
      expect(fold()).toStrictEqual(
        launchedRocket({ speed: 0, mission: 'Z', status: 'exploded', explodedReason: 'Q', ...at(5) }),
      );
    });
  });
});

describe('evolveAt', () => {
  const pad = (n: number, width = 2) => String(n).padStart(width, '0');
  /** A message time for an instant, written with an offset and extra fraction digits. */
  const text = (ms: number, offsetMinutes: number, extra: string): string => {
    const local = new Date(ms + offsetMinutes * 60_000);
    const abs = Math.abs(offsetMinutes);
    const offset =
      offsetMinutes === 0 ? 'Z' : `${offsetMinutes < 0 ? '-' : '+'}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`;
    return `${local.toISOString().slice(0, 23)}${extra}${offset}`;
  };
  const step = fc.record({
    kind: fc.constantFrom('launch', 'up', 'down', 'mission', 'explode', 'skip'),
    amount: fc.integer({ min: 0, max: 1000 }),
    ms: fc.integer({ min: Date.UTC(100, 0, 2), max: Date.UTC(9999, 11, 30) }),
    offset: fc.integer({ min: -(23 * 60 + 59), max: 23 * 60 + 59 }),
    extra: fc.constantFrom('', '1', '999999'),
  });

  it('folded with raw message times and converted once at the end, gives exactly what evolve gives', () => {
    fc.assert(
      fc.property(fc.array(step, { minLength: 1, maxLength: 30 }), (steps) => {
        const messages = steps.map((s, i): RocketMessage => {
          const base = { channel: 'c', messageNumber: i + 1, messageTime: text(s.ms, s.offset, s.extra) };
          switch (s.kind) {
            case 'launch':
              return {
                ...base,
                messageType: 'RocketLaunched',
                payload: { type: 'T', launchSpeed: s.amount, mission: 'M' },
              };
            case 'up':
              return { ...base, messageType: 'RocketSpeedIncreased', payload: { by: s.amount } };
            case 'down':
              return { ...base, messageType: 'RocketSpeedDecreased', payload: { by: s.amount } };
            case 'mission':
              return { ...base, messageType: 'RocketMissionChanged', payload: { newMission: `M${s.amount}` } };
            case 'explode':
              return { ...base, messageType: 'RocketExploded', payload: { reason: `R${s.amount}` } };
            default:
              return { ...base, messageType: MESSAGE_SKIPPED, payload: { reason: 'gap' } };
          }
        });
        const live = messages.reduce<Rocket | undefined>((state, m) => evolve(state, m), undefined);
        const raw = messages.reduce<Rocket | undefined>((state, m) => evolveAt(state, m, m.messageTime), undefined);
        expect(withUtcTimes(raw as Rocket)).toStrictEqual(live);
      }),
    );
  });
});
