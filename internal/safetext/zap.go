package safetext

import (
	"fmt"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Logger returns l with every message and string-like field escaped by
// Escape before it reaches l's encoder: error texts, transcripts, folder
// names and UIDs in the probe's log lines come from the server. zap's JSON
// encoder escapes C0 controls but writes C1 and bidi controls as they are,
// and its console encoder writes the message raw. A nil l stays nil.
func Logger(l *zap.Logger) *zap.Logger {
	if l == nil {
		return nil
	}
	return l.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		if _, ok := c.(escCore); ok {
			return c
		}
		return escCore{c}
	}))
}

type escCore struct{ zapcore.Core }

func (c escCore) With(fields []zapcore.Field) zapcore.Core {
	return escCore{c.Core.With(escapeFields(fields))}
}

func (c escCore) Check(ent zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(ent.Level) {
		return ce.AddCore(ent, c)
	}
	return ce
}

func (c escCore) Write(ent zapcore.Entry, fields []zapcore.Field) error {
	ent.Message = Escape(ent.Message)
	return c.Core.Write(ent, escapeFields(fields))
}

func escapeFields(fields []zapcore.Field) []zapcore.Field {
	out := make([]zapcore.Field, len(fields))
	for i, f := range fields {
		out[i] = escapeField(f)
	}
	return out
}

func escapeField(f zapcore.Field) zapcore.Field {
	switch f.Type {
	case zapcore.StringType:
		f.String = Escape(f.String)
	case zapcore.ByteStringType:
		if b, ok := f.Interface.([]byte); ok {
			return zap.String(f.Key, Escape(string(b)))
		}
	case zapcore.ErrorType:
		if err, ok := f.Interface.(error); ok && err != nil {
			return zap.String(f.Key, Escape(err.Error()))
		}
	case zapcore.StringerType:
		if s, ok := f.Interface.(fmt.Stringer); ok && s != nil {
			return zap.String(f.Key, Escape(fmt.Sprint(s)))
		}
	case zapcore.ArrayMarshalerType:
		if m, ok := f.Interface.(zapcore.ArrayMarshaler); ok {
			f.Interface = escArray{m}
		}
	}
	return f
}

// escArray escapes the strings of an array field such as zap.Strings.
type escArray struct{ m zapcore.ArrayMarshaler }

func (a escArray) MarshalLogArray(enc zapcore.ArrayEncoder) error {
	return a.m.MarshalLogArray(escArrayEncoder{enc})
}

type escArrayEncoder struct{ zapcore.ArrayEncoder }

func (e escArrayEncoder) AppendString(s string) { e.ArrayEncoder.AppendString(Escape(s)) }
