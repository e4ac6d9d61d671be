import fc from 'fast-check';
import { ValidationError, type Issue } from '../../src/domain/errors';
import {
  MAX_CHANNEL_LENGTH,
  MAX_TEXT_LENGTH,
  instantKey,
  parseRfc3339,
  sameContent,
  sameInstant,
  toEnvelope,
  toUtcIso,
  validateEnvelope,
  type RocketMessage,
} from '../../src/domain/message';
import { envelope, rocket, SAME_INSTANT } from '../support/telemetry';

const SEED_TIME = '2022-02-02T19:39:05.86337+01:00';

/** A fresh copy of the seed's example envelope, so each test can break it its own way. */
const seedEnvelope = () => ({
  metadata: { channel: 'rocket-1', messageNumber: 1, messageTime: SEED_TIME, messageType: 'RocketLaunched' },
  message: { type: 'Falcon-9', launchSpeed: 500, mission: 'ARTEMIS' } as Record<string, unknown>,
});

function accepted(input: unknown): RocketMessage {
  const v = validateEnvelope(input);
  if (!v.ok) throw new Error(`expected the input to be accepted, got ${JSON.stringify(v.issues)}`);
  return v.message;
}

function issuesOf(input: unknown): Issue[] {
  const v = validateEnvelope(input);
  if (v.ok) throw new Error(`expected the input to be refused, got ${JSON.stringify(v.message)}`);
  return v.issues;
}

/** Refused with exactly one issue, on `field`, whose problem mentions `problem`. */
function expectOneIssue(input: unknown, field: string, problem: string | RegExp): void {
  expect(issuesOf(input)).toEqual([{ field, problem: expect.stringMatching(problem) as unknown }]);
}

const withMetadata = (patch: Record<string, unknown>) => {
  const e = seedEnvelope();
  return { ...e, metadata: { ...e.metadata, ...patch } };
};

const withPayload = (messageType: string, message: Record<string, unknown>) => {
  const e = seedEnvelope();
  return { metadata: { ...e.metadata, messageType }, message };
};

describe('validateEnvelope', () => {
  describe('accepts', () => {
    it('the example envelope of the seed contract, keeping the time text as sent', () => {
      expect(accepted(JSON.parse(JSON.stringify(seedEnvelope())))).toStrictEqual({
        channel: 'rocket-1',
        messageNumber: 1,
        messageTime: SEED_TIME,
        messageType: 'RocketLaunched',
        payload: { type: 'Falcon-9', launchSpeed: 500, mission: 'ARTEMIS' },
      });
    });

    it.each([
      ['RocketLaunched', { type: 'Falcon-9', launchSpeed: 500, mission: 'ARTEMIS' }],
      ['RocketSpeedIncreased', { by: 3000 }],
      ['RocketSpeedDecreased', { by: 2500 }],
      ['RocketMissionChanged', { newMission: 'SHUTTLE_MIR' }],
      ['RocketExploded', { reason: 'PRESSURE_VESSEL_FAILURE' }],
    ])('every message type: %s', (messageType, payload) => {
      const m = accepted(withPayload(messageType, payload));
      expect(m.messageType).toBe(messageType);
      expect(m.payload).toStrictEqual(payload);
    });

    it('zero as an amount, and empty text in a payload', () => {
      expect(accepted(withPayload('RocketSpeedIncreased', { by: 0 })).payload).toEqual({ by: 0 });
      expect(accepted(withPayload('RocketExploded', { reason: '' })).payload).toEqual({ reason: '' });
    });

    it('the largest safe integer as a message number', () => {
      expect(accepted(withMetadata({ messageNumber: Number.MAX_SAFE_INTEGER })).messageNumber).toBe(
        Number.MAX_SAFE_INTEGER,
      );
    });

    it(`a channel of exactly ${MAX_CHANNEL_LENGTH} characters and payload text of exactly ${MAX_TEXT_LENGTH}`, () => {
      const channel = 'c'.repeat(MAX_CHANNEL_LENGTH);
      expect(accepted(withMetadata({ channel })).channel).toBe(channel);
      const newMission = 'm'.repeat(MAX_TEXT_LENGTH);
      expect(accepted(withPayload('RocketMissionChanged', { newMission })).payload).toEqual({ newMission });
    });

    it('limits counted in characters, not UTF-16 code units: an emoji is one character, as it reads', () => {
      // Each of these emoji takes two UTF-16 code units (a surrogate pair) of a JavaScript string.
      const channel = '🚀'.repeat(MAX_CHANNEL_LENGTH);
      expect(accepted(withMetadata({ channel })).channel).toBe(channel);
      const reason = '💥'.repeat(MAX_TEXT_LENGTH);
      expect(accepted(withPayload('RocketExploded', { reason })).payload).toEqual({ reason });
      expect(issuesOf(withMetadata({ channel: `${channel}c` }))).toEqual([
        { field: 'metadata.channel', problem: `must be at most ${MAX_CHANNEL_LENGTH} characters` },
      ]);
      expect(issuesOf(withPayload('RocketExploded', { reason: `${reason}💥` }))).toEqual([
        { field: 'message.reason', problem: `must be at most ${MAX_TEXT_LENGTH} characters` },
      ]);
    });

    it('objects without a prototype, as GraphQL builds its input objects', () => {
      const metadata = Object.assign(Object.create(null) as Record<string, unknown>, seedEnvelope().metadata);
      const message = Object.assign(Object.create(null) as Record<string, unknown>, seedEnvelope().message);
      const input = Object.assign(Object.create(null) as Record<string, unknown>, { metadata, message });
      expect(accepted(input).payload).toEqual({ type: 'Falcon-9', launchSpeed: 500, mission: 'ARTEMIS' });
    });
  });

  describe('ignores unknown fields', () => {
    it('at every level, and never copies them into the message', () => {
      const input = {
        ...seedEnvelope(),
        extra: 1,
        metadata: { ...seedEnvelope().metadata, source: 'radar', priority: 9 },
        message: { ...seedEnvelope().message, by: 3, reason: 'not part of a launch' },
      };
      const m = accepted(input);
      expect(Object.keys(m).sort()).toEqual(['channel', 'messageNumber', 'messageTime', 'messageType', 'payload']);
      expect(Object.keys(m.payload)).toEqual(['type', 'launchSpeed', 'mission']);
    });

    it('lists payload fields in the canonical order whatever order the sender used', () => {
      const m = accepted(withPayload('RocketLaunched', { mission: 'ARTEMIS', launchSpeed: 500, type: 'Falcon-9' }));
      expect(Object.keys(m.payload)).toEqual(['type', 'launchSpeed', 'mission']);
    });

    it('treats "__proto__" and "constructor" keys from JSON as plain unknown keys, polluting nothing', () => {
      const text =
        '{"__proto__":{"polluted":1},"constructor":{"prototype":{"polluted":1}},' +
        '"metadata":{"__proto__":{"channel":"evil"},"channel":"rocket-1","messageNumber":2,' +
        '"messageTime":"2022-02-02T19:39:05Z","messageType":"RocketSpeedIncreased"},' +
        '"message":{"__proto__":{"by":7},"constructor":"x","by":5}}';
      const m = accepted(JSON.parse(text));
      expect(m.channel).toBe('rocket-1');
      expect(m.payload).toStrictEqual({ by: 5 });
      expect(Object.getPrototypeOf(m.payload)).toBe(Object.prototype);
      expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    });

    it('never reads a field a payload only inherits', () => {
      const inherited = Object.create({ reason: 'from the prototype' }) as Record<string, unknown>;
      expectOneIssue(withPayload('RocketExploded', inherited), 'message.reason', 'is required');
      const metadata = Object.create(seedEnvelope().metadata) as Record<string, unknown>;
      expect(issuesOf({ metadata, message: seedEnvelope().message }).map((i) => i.field)).toEqual([
        'metadata.channel',
        'metadata.messageNumber',
        'metadata.messageTime',
        'metadata.messageType',
      ]);
    });

    it('refuses names of Object.prototype members as message types', () => {
      for (const messageType of ['constructor', 'toString', '__proto__', 'hasOwnProperty'])
        expectOneIssue(withMetadata({ messageType }), 'metadata.messageType', 'must be one of');
    });
  });

  describe('refuses a body', () => {
    it.each([
      [null, 'null'],
      [[], 'an array'],
      ['{"metadata":{}}', 'a string'],
      [42, 'a number'],
      [true, 'a boolean'],
      [undefined, 'a undefined'],
    ])('that is %j, saying it must be a JSON object', (input, got) => {
      expect(issuesOf(input)).toEqual([{ field: '', problem: `the body must be a JSON object, got ${got}` }]);
    });

    it('without metadata or message, naming both', () => {
      expect(issuesOf({})).toEqual([
        { field: 'metadata', problem: 'is required' },
        { field: 'message', problem: 'is required' },
      ]);
    });

    it('whose metadata or message is not an object', () => {
      expect(issuesOf({ metadata: [], message: 'hi' })).toEqual([
        { field: 'metadata', problem: 'must be an object, got an array' },
        { field: 'message', problem: 'must be an object, got a string' },
      ]);
      expect(issuesOf({ metadata: null, message: {} })).toEqual([
        { field: 'metadata', problem: 'must be an object, got null' },
      ]);
    });

    it('with valid metadata but no message', () => {
      expect(issuesOf({ metadata: seedEnvelope().metadata })).toEqual([{ field: 'message', problem: 'is required' }]);
    });
  });

  describe('refuses a channel', () => {
    it.each([
      ['missing', undefined, 'is required'],
      ['empty', '', 'must not be empty'],
      ['only whitespace', ' \t\n ', 'must not be only whitespace'],
      ['a number', 7, 'must be a string, got a number'],
      ['null', null, 'must be a string, got null'],
      ['too long', 'c'.repeat(MAX_CHANNEL_LENGTH + 1), `must be at most ${MAX_CHANNEL_LENGTH} characters`],
    ])('that is %s', (_, channel, problem) => {
      expect(issuesOf(withMetadata({ channel }))).toEqual([{ field: 'metadata.channel', problem }]);
    });

    it('that holds a lone surrogate, which no database can store as text', () => {
      expectOneIssue(
        withMetadata({ channel: JSON.parse('"a\\ud800"') as string }),
        'metadata.channel',
        /lone surrogate/,
      );
    });
  });

  it('refuses NUL characters, which PostgreSQL cannot store as text', () => {
    expectOneIssue(withMetadata({ channel: 'a\u0000b' }), 'metadata.channel', /NUL/);
    expectOneIssue(withPayload('RocketExploded', { reason: 'x\u0000' }), 'message.reason', /NUL/);
  });

  it('refuses lone surrogates in payload text too', () => {
    expectOneIssue(
      withPayload('RocketMissionChanged', { newMission: JSON.parse('"x\\udc00"') as string }),
      'message.newMission',
      /lone surrogate/,
    );
  });

  describe('refuses a message number', () => {
    it('that is missing', () => {
      expect(issuesOf(withMetadata({ messageNumber: undefined }))).toEqual([
        { field: 'metadata.messageNumber', problem: 'is required' },
      ]);
    });

    it.each([
      ['zero', 0, 'got 0'],
      ['negative', -1, 'got -1'],
      ['fractional', 1.5, 'got 1.5'],
      ['2**63, beyond exact integers', 2 ** 63, `got ${2 ** 63}`],
      ['MAX_SAFE_INTEGER + 1', Number.MAX_SAFE_INTEGER + 1, `got ${Number.MAX_SAFE_INTEGER + 1}`],
      ['the string "1"', '1', 'got a string'],
      ['Infinity', Infinity, 'got Infinity'],
      ['NaN', NaN, 'got NaN'],
      ['null', null, 'got null'],
    ])('that is %s', (_, messageNumber, got) => {
      expect(issuesOf(withMetadata({ messageNumber }))).toEqual([
        {
          field: 'metadata.messageNumber',
          problem: `must be a positive integer no larger than ${Number.MAX_SAFE_INTEGER}, ${got}`,
        },
      ]);
    });

    it('of 2**63 sent as JSON, which parses to an inexact double', () => {
      const text = JSON.stringify(seedEnvelope()).replace('"messageNumber":1', '"messageNumber":9223372036854775808');
      expectOneIssue(JSON.parse(text), 'metadata.messageNumber', 'must be a positive integer');
    });
  });

  describe('message time', () => {
    it.each([
      '2022-02-02T19:39:05Z',
      '2022-02-02t19:39:05z',
      '2022-02-02 19:39:05Z',
      '2022-02-02T19:39:05+00:00',
      '2022-02-02T19:39:05-00:00',
      '2022-02-02T19:39:05+14:00',
      '2022-02-02T19:39:05-12:00',
      '2022-02-02T19:39:05+05:45',
      '2022-02-02T19:39:05.8+01:00',
      '2022-02-02T19:39:05.86+01:00',
      '2022-02-02T19:39:05.863+01:00',
      '2022-02-02T19:39:05.8633+01:00',
      '2022-02-02T19:39:05.86337+01:00',
      '2022-02-02T19:39:05.863370+01:00',
      '2022-02-02T19:39:05.8633701+01:00',
      '2022-02-02T19:39:05.86337012+01:00',
      '2022-02-02T19:39:05.863370123+01:00',
      '2024-02-29T00:00:00Z',
      '2000-02-29T00:00:00Z',
      '2016-12-31T23:59:60Z',
      '0001-01-01T00:00:00Z',
      '9999-12-31T23:59:59.999999999Z',
    ])('accepts the RFC 3339 timestamp %s', (messageTime) => {
      expect(accepted(withMetadata({ messageTime })).messageTime).toBe(messageTime);
    });

    it.each([
      ['garbage', 'yesterday at noon'],
      ['empty', ''],
      ['a date alone', '2022-02-02'],
      ['no offset', '2022-02-02T19:39:05'],
      ['no seconds', '2022-02-02T19:39Z'],
      ['a compact offset', '2022-02-02T19:39:05+0100'],
      ['an hour-only offset', '2022-02-02T19:39:05+01'],
      ['a 10-digit fraction', '2022-02-02T19:39:05.8633701234Z'],
      ['an empty fraction', '2022-02-02T19:39:05.Z'],
      ['30 February', '2022-02-30T00:00:00Z'],
      ['29 February of a common year', '2023-02-29T00:00:00Z'],
      ['29 February 1900, not a leap year', '1900-02-29T00:00:00Z'],
      ['31 April', '2022-04-31T00:00:00Z'],
      ['month 0', '2022-00-10T00:00:00Z'],
      ['month 13', '2022-13-01T00:00:00Z'],
      ['day 0', '2022-01-00T00:00:00Z'],
      ['hour 24', '2022-02-02T24:00:00Z'],
      ['minute 60', '2022-02-02T19:60:00Z'],
      ['second 61', '2022-02-02T19:39:61Z'],
      ['an offset of 24 hours', '2022-02-02T19:39:05+24:00'],
      ['an offset of 60 minutes', '2022-02-02T19:39:05+01:60'],
      ['surrounding whitespace', ' 2022-02-02T19:39:05Z '],
      ['a trailing newline', '2022-02-02T19:39:05Z\n'],
      ['a five-digit year', '20222-02-02T19:39:05Z'],
      ['unicode digits', '٢٠٢٢-02-02T19:39:05Z'],
      ['epoch seconds as a string', '1643827145'],
      ['ten fractional digits (nanoseconds are the limit)', '2022-02-02T19:39:05.1234567891Z'],
    ])('refuses %s', (_, messageTime) => {
      expectOneIssue(
        withMetadata({ messageTime }),
        'metadata.messageTime',
        /^must be an RFC 3339 timestamp such as \S+ \(fractional seconds to at most 9 digits\)$/,
      );
    });

    it.each([
      ['year 0000 ahead of UTC', '0000-01-01T00:30:00+01:00'],
      ['year 9999 behind UTC', '9999-12-31T23:59:59-01:00'],
    ])('refuses a time whose UTC instant has no four-digit year: %s', (_, messageTime) => {
      expectOneIssue(
        withMetadata({ messageTime }),
        'metadata.messageTime',
        /within the years 0000 to 9999 once in UTC/,
      );
    });

    it.each([
      '0000-01-01T00:00:00Z',
      '0000-01-01T00:30:00-01:00',
      '9999-12-31T23:59:59.999Z',
      '9999-12-31T22:59:59+01:00',
    ])('accepts %s, whose UTC instant stays within the years 0000 to 9999', (messageTime) => {
      expect(accepted(withMetadata({ messageTime })).messageTime).toBe(messageTime);
    });

    it.each(['.', '..'])('refuses the channel %j, which no URL path can name', (channel) => {
      expectOneIssue(withMetadata({ channel }), 'metadata.channel', /must not be "\." or "\.\."/);
      expect(accepted(withMetadata({ channel: '...' })).channel).toBe('...');
    });

    it('refuses a missing time, or one that is not a string', () => {
      expect(issuesOf(withMetadata({ messageTime: undefined }))).toEqual([
        { field: 'metadata.messageTime', problem: 'is required' },
      ]);
      expectOneIssue(withMetadata({ messageTime: 1643827145863 }), 'metadata.messageTime', /RFC 3339/);
      expectOneIssue(withMetadata({ messageTime: new Date() }), 'metadata.messageTime', /RFC 3339/);
    });
  });

  describe('refuses a message type', () => {
    it.each([['RocketLanded'], ['rocketlaunched'], [''], [3]])('that is %j, listing the known ones', (messageType) => {
      expect(issuesOf(withMetadata({ messageType }))).toEqual([
        {
          field: 'metadata.messageType',
          problem:
            'must be one of RocketLaunched, RocketSpeedIncreased, RocketSpeedDecreased, RocketMissionChanged, RocketExploded',
        },
      ]);
    });

    it('that only the server records: MessageSkipped', () => {
      expect(
        issuesOf({ metadata: { ...seedEnvelope().metadata, messageType: 'MessageSkipped' }, message: { reason: 'x' } }),
      ).toEqual([{ field: 'metadata.messageType', problem: expect.stringMatching(/^must be one of /) as unknown }]);
    });

    it('that is missing, and then checks no payload', () => {
      expect(issuesOf({ metadata: { ...seedEnvelope().metadata, messageType: undefined }, message: {} })).toEqual([
        { field: 'metadata.messageType', problem: 'is required' },
      ]);
    });
  });

  describe('refuses a payload', () => {
    it.each([
      [
        'a speed sent as a string',
        'RocketLaunched',
        { type: 'F', launchSpeed: '500', mission: 'M' },
        'message.launchSpeed',
        'must be a number, got a string',
      ],
      [
        'a negative launch speed',
        'RocketLaunched',
        { type: 'F', launchSpeed: -1, mission: 'M' },
        'message.launchSpeed',
        'must not be negative',
      ],
      [
        'a type that is not text',
        'RocketLaunched',
        { type: 9, launchSpeed: 1, mission: 'M' },
        'message.type',
        'must be a string, got a number',
      ],
      ['a missing mission', 'RocketLaunched', { type: 'F', launchSpeed: 1 }, 'message.mission', 'is required'],
      ['a negative increase', 'RocketSpeedIncreased', { by: -5 }, 'message.by', 'must not be negative'],
      ['a negative decrease', 'RocketSpeedDecreased', { by: -0.5 }, 'message.by', 'must not be negative'],
      ['a null amount', 'RocketSpeedDecreased', { by: null }, 'message.by', 'must be a number, got null'],
      [
        'an amount as an object',
        'RocketSpeedIncreased',
        { by: { value: 1 } },
        'message.by',
        'must be a number, got a object',
      ],
      ['a boolean amount', 'RocketSpeedIncreased', { by: true }, 'message.by', 'must be a number, got a boolean'],
      ['a missing amount', 'RocketSpeedIncreased', {}, 'message.by', 'is required'],
      [
        'a new mission as an array',
        'RocketMissionChanged',
        { newMission: ['A'] },
        'message.newMission',
        'must be a string, got an array',
      ],
      ['a missing reason', 'RocketExploded', { cause: 'x' }, 'message.reason', 'is required'],
      [
        'text over the limit',
        'RocketExploded',
        { reason: 'r'.repeat(MAX_TEXT_LENGTH + 1) },
        'message.reason',
        `must be at most ${MAX_TEXT_LENGTH} characters`,
      ],
    ])('with %s', (_, messageType, payload, field, problem) => {
      expect(issuesOf(withPayload(messageType, payload))).toEqual([{ field, problem }]);
    });

    const finite = `must be a finite number no larger than ${Number.MAX_SAFE_INTEGER}, got`;

    it.each([
      ['by', 'RocketSpeedIncreased', '{"by":1e309}'],
      ['launchSpeed', 'RocketLaunched', '{"type":"F","launchSpeed":1e400,"mission":"M"}'],
    ])('whose %s overflows to Infinity in JSON, saying the number is too large', (name, type, body) => {
      const input: unknown = JSON.parse(
        '{"metadata":{"channel":"r","messageNumber":1,"messageTime":"2022-02-02T19:39:05Z",' +
          `"messageType":"${type}"},"message":${body}}`,
      );
      expect(issuesOf(input)).toEqual([
        { field: `message.${name}`, problem: `${finite} a number too large to represent` },
      ]);
    });

    it.each([
      ['NaN', NaN, 'NaN'],
      ['Infinity', Infinity, 'a number too large to represent'],
      ['-Infinity', -Infinity, 'a negative number too large to represent'],
    ])('whose amount is %s, as a caller that does not speak JSON can send', (_, by, got) => {
      const issues = issuesOf(withPayload('RocketSpeedIncreased', { by }));
      expect(issues).toEqual([{ field: 'message.by', problem: `${finite} ${got}` }]);
    });

    it('whose amount is a boxed number or a bigint', () => {
      const boxed: unknown = Object(5);
      expectOneIssue(withPayload('RocketSpeedIncreased', { by: boxed }), 'message.by', 'got a object');
      expectOneIssue(withPayload('RocketSpeedIncreased', { by: 5n }), 'message.by', 'got a bigint');
    });
  });

  describe('reports every issue together', () => {
    it('across metadata fields and the message, in field order', () => {
      const input = {
        metadata: { channel: '', messageNumber: 0, messageTime: '2022-02-30T00:00:00Z', messageType: 'Nope' },
        message: 'no',
      };
      expect(issuesOf(input).map((i) => i.field)).toEqual([
        'message',
        'metadata.channel',
        'metadata.messageNumber',
        'metadata.messageTime',
        'metadata.messageType',
      ]);
    });

    it('across payload fields', () => {
      expect(issuesOf(withPayload('RocketLaunched', { launchSpeed: -3, mission: 4 }))).toEqual([
        { field: 'message.type', problem: 'is required' },
        { field: 'message.launchSpeed', problem: 'must not be negative' },
        { field: 'message.mission', problem: 'must be a string, got a number' },
      ]);
    });

    it('alongside metadata issues when the type is known', () => {
      expect(
        issuesOf({ metadata: { ...seedEnvelope().metadata, messageNumber: -2 }, message: { launchSpeed: 'fast' } }),
      ).toEqual([
        { field: 'metadata.messageNumber', problem: expect.stringContaining('got -2') as unknown },
        { field: 'message.type', problem: 'is required' },
        { field: 'message.launchSpeed', problem: 'must be a number, got a string' },
        { field: 'message.mission', problem: 'is required' },
      ]);
    });

    it('as one readable ValidationError with the BAD_USER_INPUT code', () => {
      const e = new ValidationError(issuesOf({ metadata: {}, message: {} }).slice(0, 2));
      expect(e.code).toBe('BAD_USER_INPUT');
      expect(e.message).toBe('metadata.channel: is required; metadata.messageNumber: is required');
      expect(new ValidationError(issuesOf(null)).message).toBe('the body must be a JSON object, got null');
    });
  });

  it('never throws, whatever JSON it is given', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (value) => {
        const v = validateEnvelope(value);
        expect(v.ok || v.issues.length > 0).toBe(true);
      }),
    );
  });

  it('round-trips every valid message through its wire format', () => {
    const r = rocket('r');
    for (const m of [r.launched(1), r.increased(2, 5), r.decreased(3, 1), r.missionChanged(4, 'X'), r.exploded(5, 'y')])
      expect(accepted(JSON.parse(JSON.stringify(toEnvelope(m))))).toStrictEqual(m);
  });
});

describe('parseRfc3339', () => {
  it('reads the seed example as 18:39:05.863 UTC, truncating sub-millisecond digits', () => {
    expect(parseRfc3339(SEED_TIME)).toBe(Date.UTC(2022, 1, 2, 18, 39, 5, 863));
    expect(toUtcIso(SEED_TIME)).toBe('2022-02-02T18:39:05.863Z');
    expect(parseRfc3339('2022-02-02T19:39:05.9999Z')).toBe(Date.UTC(2022, 1, 2, 19, 39, 5, 999));
    expect(parseRfc3339('2022-02-02T19:39:05.1Z')).toBe(Date.UTC(2022, 1, 2, 19, 39, 5, 100));
  });

  it('reads one instant the same way whatever offset expresses it', () => {
    const instant = Date.UTC(2022, 1, 2, 18, 39, 5);
    for (const text of [
      '2022-02-02T18:39:05Z',
      '2022-02-02T18:39:05+00:00',
      '2022-02-02T18:39:05-00:00',
      '2022-02-02T19:39:05+01:00',
      '2022-02-02T13:09:05-05:30',
      '2022-02-03T08:39:05+14:00',
      '2022-02-02T06:39:05-12:00',
      '2022-02-03T00:24:05+05:45',
    ])
      expect([text, parseRfc3339(text)]).toEqual([text, instant]);
  });

  it('crosses day, month and year boundaries with the offset', () => {
    expect(parseRfc3339('2021-12-31T23:30:00-01:00')).toBe(Date.UTC(2022, 0, 1, 0, 30));
    expect(parseRfc3339('2022-01-01T00:30:00+01:00')).toBe(Date.UTC(2021, 11, 31, 23, 30));
    expect(parseRfc3339('2024-03-01T00:00:00+00:01')).toBe(Date.UTC(2024, 1, 29, 23, 59));
  });

  it('reads a leap second as the second before it', () => {
    expect(parseRfc3339('2016-12-31T23:59:60Z')).toBe(Date.UTC(2016, 11, 31, 23, 59, 59));
  });

  it('reads years before 100 as themselves, not as 19xx', () => {
    expect(toUtcIso('0050-06-01T00:00:00Z')).toBe('0050-06-01T00:00:00.000Z');
    expect(parseRfc3339('0000-02-29T00:00:00Z')).toBe(Date.parse('0000-02-29T00:00:00Z'));
    expect(parseRfc3339('0100-02-29T00:00:00Z')).toBeUndefined();
  });

  it('returns undefined for text that is not RFC 3339', () => {
    expect(parseRfc3339('2022-02-30T00:00:00Z')).toBeUndefined();
    expect(parseRfc3339('Wed, 02 Feb 2022 19:39:05 GMT')).toBeUndefined();
  });

  it('agrees with the instant it was formatted from, for any instant of years 0..9999 and any offset', () => {
    const pad = (n: number, width = 2) => String(n).padStart(width, '0');
    fc.assert(
      fc.property(
        fc.date({
          min: new Date('0000-01-02T00:00:00Z'),
          max: new Date('9999-12-30T23:59:59.999Z'),
          noInvalidDate: true,
        }),
        fc.integer({ min: -(23 * 60 + 59), max: 23 * 60 + 59 }),
        fc.integer({ min: 0, max: 999_999 }),
        fc.constantFrom('T', 't', ' '),
        (instant, offsetMinutes, subMillisecond, separator) => {
          const local = new Date(instant.getTime() + offsetMinutes * 60_000);
          const abs = Math.abs(offsetMinutes);
          const offset =
            offsetMinutes === 0 ? 'Z' : `${offsetMinutes < 0 ? '-' : '+'}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`;
          const text =
            `${pad(local.getUTCFullYear(), 4)}-${pad(local.getUTCMonth() + 1)}-${pad(local.getUTCDate())}` +
            `${separator}${pad(local.getUTCHours())}:${pad(local.getUTCMinutes())}:${pad(local.getUTCSeconds())}` +
            `.${pad(local.getUTCMilliseconds(), 3)}${pad(subMillisecond, 6)}${offset}`;
          expect(parseRfc3339(text)).toBe(instant.getTime());
          expect(toUtcIso(text)).toBe(instant.toISOString());
        },
      ),
    );
  });
});

/** parseRfc3339 as it was written first, with a regular expression and Date: the reference. */
const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?([Zz]|([+-])(\d{2}):(\d{2}))$/;
function referenceParse(text: string): number | undefined {
  const utc = (year: number, monthIndex: number, day: number, hour = 0, minute = 0, second = 0): number => {
    const d = new Date(0);
    d.setUTCFullYear(year, monthIndex, day);
    d.setUTCHours(hour, minute, second);
    return d.getTime();
  };
  const m = RFC3339.exec(text);
  if (!m) return undefined;
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number) as [
    number,
    number,
    number,
    number,
    number,
    number,
  ];
  const daysInMonth = new Date(utc(year, month, 0)).getUTCDate();
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth) return undefined;
  if (hour > 23 || minute > 59 || second > 60) return undefined;
  let offsetMinutes = 0;
  if (m[9] !== undefined) {
    const oh = Number(m[10]);
    const om = Number(m[11]);
    if (oh > 23 || om > 59) return undefined;
    offsetMinutes = (m[9] === '-' ? -1 : 1) * (oh * 60 + om);
  }
  const fraction = m[7] ? Number(`0${m[7]}`) : 0;
  return (
    utc(year, month - 1, day, hour, minute, Math.min(second, 59)) + Math.floor(fraction * 1000) - offsetMinutes * 60_000
  );
}

describe('parseRfc3339 and toUtcIso against the regular-expression reference', () => {
  const pad = (n: number, width = 2) => String(n).padStart(width, '0');
  /** Texts near the format: every field in and just out of range, any separators, sometimes one character changed. */
  const nearly = fc
    .record({
      year: fc.integer({ min: 0, max: 9999 }),
      month: fc.integer({ min: 0, max: 13 }),
      day: fc.integer({ min: 0, max: 32 }),
      separator: fc.constantFrom('T', 't', ' ', '_'),
      hour: fc.integer({ min: 0, max: 25 }),
      minute: fc.integer({ min: 0, max: 60 }),
      second: fc.integer({ min: 0, max: 61 }),
      fraction: fc.option(fc.stringMatching(/^[0-9]{0,11}$/), { nil: undefined }),
      zone: fc.oneof(
        fc.constantFrom('Z', 'z', '', 'UTC', '+0100', '+01:0', '-00:00'),
        fc
          .tuple(fc.constantFrom('+', '-'), fc.integer({ min: 0, max: 25 }), fc.integer({ min: 0, max: 61 }))
          .map(([sign, h, m]) => `${sign}${pad(h)}:${pad(m)}`),
      ),
      edit: fc.option(fc.tuple(fc.nat(), fc.constantFrom('', 'x', '0', '9', ':', '-', '.', '\n', '\u0660', '１')), {
        nil: undefined,
      }),
    })
    .map((f) => {
      const text =
        `${pad(f.year, 4)}-${pad(f.month)}-${pad(f.day)}${f.separator}${pad(f.hour)}:${pad(f.minute)}:${pad(f.second)}` +
        `${f.fraction === undefined ? '' : `.${f.fraction}`}${f.zone}`;
      if (f.edit === undefined) return text;
      const at = f.edit[0] % (text.length + 1);
      return text.slice(0, at) + f.edit[1] + text.slice(at + 1);
    });

  it('accepts and refuses exactly the same texts, reading each as the same instant', () => {
    fc.assert(
      fc.property(fc.oneof(nearly, fc.string({ maxLength: 40 })), (text) => {
        expect([text, parseRfc3339(text)]).toEqual([text, referenceParse(text)]);
      }),
      { numRuns: 20_000 },
    );
  });

  it('writes what Date#toISOString writes, for every instant of years 0..9999 and beyond', () => {
    for (const text of [
      '0000-01-01T00:00:00Z',
      '0000-01-01T00:00:00+00:01',
      '9999-12-31T23:59:59.999Z',
      '9999-12-31T23:59:59.999-00:01',
      '1969-12-31T23:59:59.999Z',
      '1970-01-01T00:00:00-00:00',
      '2000-02-29T12:00:00.5+12:00',
      '2016-12-31T23:59:60.5Z',
      '2016-12-31T23:59:60.500Z',
      '2022-02-02T18:39:05.863z',
      '2022-02-02t18:39:05.863Z',
      '2022-02-02 18:39:05.863Z',
    ])
      expect([text, toUtcIso(text)]).toEqual([text, new Date(referenceParse(text) as number).toISOString()]);
    fc.assert(
      fc.property(
        fc.integer({ min: Date.UTC(-1, 0, 1), max: Date.UTC(10000, 11, 31) }),
        fc.integer({ min: -(23 * 60 + 59), max: 23 * 60 + 59 }),
        (ms, offsetMinutes) => {
          const local = new Date(ms + offsetMinutes * 60_000);
          if (local.getUTCFullYear() < 0 || local.getUTCFullYear() > 9999) return;
          const abs = Math.abs(offsetMinutes);
          const text =
            `${pad(local.getUTCFullYear(), 4)}-${local.toISOString().slice(-19, -1)}` +
            `${offsetMinutes < 0 ? '-' : '+'}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`;
          expect([text, toUtcIso(text)]).toEqual([text, new Date(ms).toISOString()]);
        },
      ),
      { numRuns: 20_000 },
    );
  });

  it('answers a time already written as Date#toISOString writes it unchanged', () => {
    // 0000-01-01T00:00:00.000Z to 9999-12-31T23:59:59.999Z (Date.UTC reads years 0..99 as 1900..1999).
    fc.assert(
      fc.property(fc.integer({ min: -62_167_219_200_000, max: 253_402_300_799_999 }), (ms) => {
        const text = new Date(ms).toISOString();
        expect(toUtcIso(text)).toBe(text);
      }),
      { numRuns: 5_000 },
    );
  });

  it('throws on text that is not a time, as building an invalid Date does', () => {
    expect(() => toUtcIso('2022-02-30T00:00:00Z')).toThrow(RangeError);
    expect(() => toUtcIso('not a time')).toThrow(RangeError);
  });
});

describe('sameContent', () => {
  const r = rocket('r');

  it('holds for a redelivery built from the same envelope', () => {
    expect(sameContent(r.launched(1), r.launched(1))).toBe(true);
    expect(sameContent(r.exploded(7, 'boom'), r.exploded(7, 'boom'))).toBe(true);
  });

  it('ignores the order in which payload fields were written', () => {
    const a = r.launched(1);
    const b = { ...a, payload: { mission: 'ARTEMIS', launchSpeed: 500, type: 'Falcon-9' } } as RocketMessage;
    expect(sameContent(a, b)).toBe(true);
  });

  it('fails when any payload field differs', () => {
    expect(sameContent(r.launched(1), r.launched(1, { launchSpeed: 501 }))).toBe(false);
    expect(sameContent(r.launched(1), r.launched(1, { mission: 'ARTEMIS II' }))).toBe(false);
    expect(sameContent(r.launched(1), r.launched(1, { type: 'Falcon-Heavy' }))).toBe(false);
    expect(sameContent(r.increased(2, 10), r.increased(2, 11))).toBe(false);
  });

  it('fails when the message type differs, even with a payload of the same shape', () => {
    expect(sameContent(r.increased(2, 10), r.decreased(2, 10))).toBe(false);
  });

  it('compares message times as instants: one instant written differently is the same content', () => {
    const a = r.increased(2, 10, '2022-01-01T00:00:00Z');
    for (const same of SAME_INSTANT) expect([same, sameContent(a, r.increased(2, 10, same))]).toEqual([same, true]);
    expect(sameContent(a, r.increased(2, 11, '2022-01-01T01:00:00+01:00'))).toBe(false);
    expect(sameContent(a, r.decreased(2, 10, '2022-01-01T01:00:00+01:00'))).toBe(false);
  });

  it('tells instants apart to the nanosecond, finer than the milliseconds parseRfc3339 keeps', () => {
    const a = r.increased(2, 10, '2022-01-01T00:00:00.123456789Z');
    const at = (time: string) => sameContent(a, r.increased(2, 10, time));
    expect(at('2022-01-01T01:00:00.123456789+01:00')).toBe(true);
    expect(at('2022-01-01T00:00:00.123456788Z')).toBe(false);
    expect(at('2022-01-01T00:00:00.123Z')).toBe(false);
    expect(at('2022-01-01T00:00:00.124Z')).toBe(false);
    const b = r.increased(2, 10, '2022-01-01T00:00:00.5Z');
    expect(sameContent(b, r.increased(2, 10, '2022-01-01T00:00:00.500000Z'))).toBe(true);
    expect(sameContent(b, r.increased(2, 10, '2022-01-01T01:00:00.50+01:00'))).toBe(true);
    expect(sameContent(b, r.increased(2, 10, '2022-01-01T00:00:00.5000001Z'))).toBe(false);
    expect(sameContent(b, r.increased(2, 10, '2022-01-01T00:00:00.05Z'))).toBe(false);
  });

  it('keeps a leap second apart from the second before it, which parseRfc3339 reads it as', () => {
    const leap = r.increased(2, 10, '2016-12-31T23:59:60Z');
    expect(parseRfc3339('2016-12-31T23:59:60Z')).toBe(parseRfc3339('2016-12-31T23:59:59Z'));
    expect(sameContent(leap, r.increased(2, 10, '2016-12-31T23:59:59Z'))).toBe(false);
    expect(sameContent(leap, r.increased(2, 10, '2017-01-01T00:59:60+01:00'))).toBe(true);
    expect(sameContent(leap, r.increased(2, 10, '2016-12-31T23:59:60.000Z'))).toBe(true);
  });

  it('keys an instant to the nanosecond, and nothing that is not a time', () => {
    const half = instantKey('2022-01-01T00:00:00.500000000Z');
    expect(instantKey('2022-01-01T01:00:00.5+01:00')).toBe(half);
    expect(instantKey('2022-01-01T00:00:00.0000001Z')).not.toBe(instantKey('2022-01-01T00:00:00Z'));
    expect(instantKey('2022-02-30T00:00:00Z')).toBeUndefined();
    expect(sameInstant('not a time', 'not a time')).toBe(true);
    expect(sameInstant('not a time', 'not a time ')).toBe(false);
  });

  it('ignores unknown fields the sender added, since validation never keeps them', () => {
    const base = envelope('r', 3, 'RocketMissionChanged', { newMission: 'M' });
    const noisy = { ...base, message: { ...base.message, note: 'resent' } };
    expect(sameContent(accepted(base), accepted(noisy))).toBe(true);
  });
});
