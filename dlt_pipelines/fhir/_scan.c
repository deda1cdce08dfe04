/* The fast path's work on a resource's JSON text, compiled (see fastpath.py and rows.py).
 *
 * One validating pass reads a resource's JSON: every token is checked against the JSON grammar
 * (strings as UTF-8, escapes, numbers), every object key is classified (configured from Python:
 * date elements by kind, references, protected elements), a date element's string value is
 * checked against the FHIR R4 grammar of its kind, and the members the fast path acts on are
 * noted as (kind, key_start, value_start, value_end), value_start being -1 when the value is not
 * a string without escapes.
 *
 * scan(body, type_date) returns those members as tuples, or None when the fast path cannot
 * decide: a key with an escape, an escaped string in a date element or a reference, a date that
 * fails its check, or text that is not well formed.
 *
 * Rows gathers bronze rows per resource type as Arrow columns. Rows.add(body, urn_map) does what
 * FastPath.row does in Python, on the same pass: it reads the head (resourceType, which must come
 * first, id, meta, and the members naming the patient), rewrites bundle references, replaces the
 * references to the patient by their pseudonymized objects, seals attachments, parses
 * meta.lastUpdated, computes the content hash and appends the row. It returns False, having
 * appended nothing, whenever Python must decide (the Python fast path, then the full walk), so
 * it only has to be right when it says True. Rows.append takes a row decided in Python, so that
 * the rows of a type stay in input order.
 *
 * Python is called back only for what it owns: a patient's pseudonym and sealer
 * (Transformer._patient_sealer, when the transformer's cache misses), the pseudonymized text of a
 * reference to a patient (FastPath.reference_text, remembered here), and sealing an attachment.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>

enum { C_NONE = 0, C_DATETIME = 1, C_DATE = 2, C_INSTANT = 3, C_MEMBER = 4 };
/* the kinds of members, as fastpath.py numbers them */
enum { K_REFERENCE = 1, K_CONTENT_TYPE = 2, K_PROTECTED = 3, K_CONCLUSION = 4 };
/* what a pass concludes: the text is read; the fast path cannot decide; the text is not JSON */
enum { P_OK = 0, P_UNDECIDED = 1, P_INVALID = 2, P_ERROR = -1 };
/* the kinds of values */
enum { V_NONE = 0, V_STRING, V_ESCAPED, V_OBJECT, V_ARRAY, V_NULL, V_OTHER };
/* where a value sits: anywhere, the resource itself, the resource's meta, a bundle's entry, its
 * resource, request or response, the resource's text (its narrative), or (from X_SUBJECT) the
 * value of the resource's subject member number f (X_SUBJECT + 2 f) or an element of it when it
 * is an array (X_SUBJECT + 2 f + 1) */
enum { X_NONE = 0, X_ROOT, X_META, X_ENTRY, X_RESOURCE, X_REQUEST, X_RESPONSE, X_TEXT,
       X_SUBJECT = 8 };
/* the members of a bundle's entry a pass keeps (Pass.entry) */
enum { E_FULL_URL, E_RESOURCE, E_REQUEST, E_RESPONSE, E_TYPE, E_ID, E_METHOD, E_URL, E_MODIFIED,
       ENTRY_MEMBERS };

#define MAX_DEPTH 256
#define SUBJECT_FIELDS 4
#define SUBJECT_REFERENCES 16
#define CACHE_ENTRIES 100000

typedef struct {
    char *name;
    Py_ssize_t length;
    int cls;
    int kind; /* for C_MEMBER: the kind returned to Python */
} KeyClass;

typedef struct {
    char *type;
    Py_ssize_t type_length;
    char *key;
    Py_ssize_t key_length;
} TypeDate;

static KeyClass *classes = NULL;
static Py_ssize_t class_count = 0;
/* whether a configured class has a name of this length (up to 63) starting with this byte: most
 * keys have none, and are classified by their ending alone */
static unsigned char class_starts[64][256];
static TypeDate *type_dates = NULL;
static Py_ssize_t type_date_count = 0;
static unsigned char stops[256]; /* bytes that end a run of plain string characters */

/* --- the FHIR date grammars ------------------------------------------------------------------ */

static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

static int two(const unsigned char *s, int low, int high) {
    int value;
    if (!is_digit(s[0]) || !is_digit(s[1])) return 0;
    value = (s[0] - '0') * 10 + (s[1] - '0');
    return value >= low && value <= high;
}

/* YYYY, not 0000 */
static int year(const unsigned char *s) {
    return is_digit(s[0]) && is_digit(s[1]) && is_digit(s[2]) && is_digit(s[3]) &&
           !(s[0] == '0' && s[1] == '0' && s[2] == '0' && s[3] == '0');
}

/* hh:mm:ss(.f{1,9})?(Z|(+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00)) from s, exactly n bytes */
static int time_and_zone(const unsigned char *s, Py_ssize_t n) {
    Py_ssize_t i = 8, digits = 0;
    if (n < 9) return 0;
    if (!two(s, 0, 23) || s[2] != ':' || !two(s + 3, 0, 59) || s[5] != ':' || !two(s + 6, 0, 60))
        return 0;
    if (s[i] == '.') {
        i++;
        while (i < n && is_digit(s[i]) && digits < 10) { i++; digits++; }
        if (digits < 1 || digits > 9) return 0;
    }
    if (i >= n) return 0;
    if (s[i] == 'Z') return i + 1 == n;
    if (s[i] != '+' && s[i] != '-') return 0;
    if (n - i != 6 || s[i + 3] != ':') return 0;
    if (s[i + 1] == '1' && s[i + 2] == '4') return s[i + 4] == '0' && s[i + 5] == '0';
    return two(s + i + 1, 0, 13) && two(s + i + 4, 0, 59);
}

/* YYYY(-MM(-DD)?)?; *end gets how far the date went */
static int date_part(const unsigned char *s, Py_ssize_t n, Py_ssize_t *end) {
    if (n < 4 || !year(s)) return 0;
    if (n == 4) { *end = 4; return 1; }
    if (s[4] != '-' || n < 7 || !two(s + 5, 1, 12)) return 0;
    if (n == 7) { *end = 7; return 1; }
    if (s[7] != '-' || n < 10 || !two(s + 8, 1, 31)) return 0;
    *end = 10;
    return 1;
}

static int check(int cls, const unsigned char *s, Py_ssize_t n) {
    Py_ssize_t end = 0;
    if (!date_part(s, n, &end)) return 0;
    if (cls == C_DATE) return end == n;
    if (cls == C_INSTANT) return end == 10 && n > 11 && s[10] == 'T' &&
                                 time_and_zone(s + 11, n - 11);
    /* dateTime: a date, or a full date with a time and a zone */
    if (end == n) return 1;
    return end == 10 && n > 11 && s[10] == 'T' && time_and_zone(s + 11, n - 11);
}

static int number(const unsigned char *s, int digits) {
    int value = 0, i;
    for (i = 0; i < digits; i++) value = value * 10 + (s[i] - '0');
    return value;
}

/* days since 1970-01-01 of a proleptic Gregorian date */
static int64_t days_from_civil(int64_t y, int m, int d) {
    int64_t era, yoe, doy, doe;
    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* An instant that passed its check, in microseconds since the epoch (UTC), as
 * transform.parse_instant reads it: fractions beyond microseconds are cut off. Returns 0 for what
 * Python would refuse or could overflow on (a second 60, a day the month lacks, the first and
 * last years), so that Python decides those. */
static int instant_micros(const unsigned char *s, Py_ssize_t n, int64_t *out) {
    static const int month_days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int y = number(s, 4), m = number(s + 5, 2), d = number(s + 8, 2);
    int hour = number(s + 11, 2), minute = number(s + 14, 2), second = number(s + 17, 2);
    int64_t micros = 0, offset = 0, scale = 100000;
    Py_ssize_t i = 19;
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (y < 2 || y > 9998 || second > 59) return 0;
    if (d > month_days[m - 1] + (m == 2 && leap)) return 0;
    if (s[i] == '.') {
        for (i++; i < n && is_digit(s[i]); i++) {
            micros += (s[i] - '0') * scale;
            scale /= 10;
        }
    }
    if (s[i] != 'Z') {
        offset = (number(s + i + 1, 2) * 60 + number(s + i + 4, 2)) * 60;
        if (s[i] == '-') offset = -offset;
    }
    *out = ((days_from_civil(y, m, d) * 86400 + hour * 3600 + minute * 60 + second) - offset) *
           1000000 + micros;
    return 1;
}

/* --- one validating pass over a resource ------------------------------------------------------ */

typedef struct {
    int kind;
    int where;                            /* where its object sits (X_...) */
    Py_ssize_t key_start, value_start, value_end;
    Py_ssize_t string_start, string_end;  /* a string value with its quotes, escapes or not */
} Member;

/* a value's text: [start, end), the contents between the quotes for a string */
typedef struct {
    Py_ssize_t start, end;
    int kind;
} Span;

/* the "reference" of an object in a subject member (transform.SUBJECT_FIELDS) */
typedef struct {
    int field;
    Span value;
} SubjectReference;

typedef struct {
    const unsigned char *s;
    Py_ssize_t n;
    const char *type_date;
    Py_ssize_t type_length;
    int plain;  /* only validate: no key classified, no member noted (bundle) */
    int head;   /* read the head too (Rows.add) */
    int spaced; /* whitespace was met between tokens */
    Member *members;
    Py_ssize_t count, capacity;
    Span type, id, meta, version, updated, subjects[SUBJECT_FIELDS];
    SubjectReference references[SUBJECT_REFERENCES];
    Py_ssize_t reference_count;
    Span entry[ENTRY_MEMBERS];
} Pass;

static const char *subject_names[SUBJECT_FIELDS] = {"subject", "patient", "beneficiary",
                                                      "individual"};

static int classify(const unsigned char *key, Py_ssize_t n, const char *type_date,
                    Py_ssize_t type_length, int *kind) {
    Py_ssize_t index;
    if (type_length && n == type_length && memcmp(key, type_date, n) == 0) return C_DATE;
    for (index = n == 0 || n >= 64 || class_starts[n][key[0]] ? 0 : class_count;
         index < class_count; index++) {
        if (classes[index].length == n && memcmp(classes[index].name, key, n) == 0) {
            *kind = classes[index].kind;
            return classes[index].cls;
        }
    }
    if ((n >= 4 && memcmp(key + n - 4, "Date", 4) == 0) ||
        (n >= 8 && memcmp(key + n - 8, "DateTime", 8) == 0))
        return C_DATETIME;
    return C_NONE;
}

static int is_space(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

static Py_ssize_t skip_space(const unsigned char *s, Py_ssize_t n, Py_ssize_t i) {
    while (i < n && is_space(s[i])) i++;
    return i;
}

/* skip_space inside a pass, noting whether there was any */
static Py_ssize_t space(Pass *pass, Py_ssize_t i) {
    Py_ssize_t j = skip_space(pass->s, pass->n, i);
    pass->spaced |= j != i;
    return j;
}

static int hex_value(const unsigned char *s, unsigned *out) {
    unsigned value = 0;
    int i;
    for (i = 0; i < 4; i++) {
        unsigned char c = s[i];
        value <<= 4;
        if (c >= '0' && c <= '9') value |= c - '0';
        else if (c >= 'a' && c <= 'f') value |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') value |= c - 'A' + 10;
        else return 0;
    }
    *out = value;
    return 1;
}

/* the length of the UTF-8 sequence at s (well formed, shortest form, no surrogates), or 0 */
static Py_ssize_t utf8_length(const unsigned char *s, Py_ssize_t n) {
    unsigned char c = s[0];
    if (c >= 0xC2 && c <= 0xDF) return n >= 2 && (s[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        unsigned char low = c == 0xE0 ? 0xA0 : 0x80, high = c == 0xED ? 0x9F : 0xBF;
        return n >= 3 && s[1] >= low && s[1] <= high && (s[2] & 0xC0) == 0x80 ? 3 : 0;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        unsigned char low = c == 0xF0 ? 0x90 : 0x80, high = c == 0xF4 ? 0x8F : 0xBF;
        return n >= 4 && s[1] >= low && s[1] <= high && (s[2] & 0xC0) == 0x80 &&
                       (s[3] & 0xC0) == 0x80 ? 4 : 0;
    }
    return 0;
}

#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

/* The high bit of each of 8 bytes (little-endian) that may be a quote, a backslash, a control
 * character or not ASCII. A flag can be wrong only above a right one (a borrow runs upwards), so
 * the lowest flag is the first such byte, and none means there is none. */
static uint64_t stop_mask(uint64_t v) {
    uint64_t quote = v ^ (ONES * '"'), slash = v ^ (ONES * '\\');
    uint64_t control = (v - ONES * 0x20) & ~v, quotes = (quote - ONES) & ~quote;
    uint64_t slashes = (slash - ONES) & ~slash;
    return (control | quotes | slashes | v) & HIGHS;
}

static int alnum(unsigned char c) {
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

/* A string from its opening quote at i: *end is just past its closing quote, *escaped tells
 * whether it holds an escape. Control characters, bad escapes, lone surrogates and bytes that
 * are not UTF-8 are refused, as msgspec refuses them. */
static int read_string(const unsigned char *s, Py_ssize_t n, Py_ssize_t i, Py_ssize_t *end,
                       int *escaped) {
    Py_ssize_t j = i + 1;
    *escaped = 0;
    for (;;) {
        unsigned char c;
        for (;;) {
            uint64_t v, mask;
            if (j + 8 > n) {
                while (j < n && !stops[s[j]]) j++;
                break;
            }
            memcpy(&v, s + j, 8);
            mask = stop_mask(v);
            if (mask) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
                j += __builtin_ctzll(mask) >> 3;
#else
                while (!stops[s[j]]) j++;
#endif
                break;
            }
            j += 8;
        }
        if (j >= n) return P_INVALID;
        c = s[j];
        if (c == '"') {
            *end = j + 1;
            return P_OK;
        }
        if (c == '\\') {
            unsigned code, low;
            *escaped = 1;
            if (j + 1 >= n) return P_INVALID;
            c = s[j + 1];
            if (c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' ||
                c == 'r' || c == 't') {
                j += 2;
                continue;
            }
            if (c != 'u' || j + 6 > n || !hex_value(s + j + 2, &code)) return P_INVALID;
            j += 6;
            if (code >= 0xDC00 && code <= 0xDFFF) return P_INVALID;
            if (code >= 0xD800 && code <= 0xDBFF) {
                if (j + 6 > n || s[j] != '\\' || s[j + 1] != 'u' || !hex_value(s + j + 2, &low) ||
                    low < 0xDC00 || low > 0xDFFF)
                    return P_INVALID;
                j += 6;
            }
            continue;
        }
        if (c < 0x20) return P_INVALID;
        {
            Py_ssize_t length = utf8_length(s + j, n - j);
            if (!length) return P_INVALID;
            j += length;
        }
    }
}

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static int read_number(const unsigned char *s, Py_ssize_t n, Py_ssize_t i, Py_ssize_t *end) {
    Py_ssize_t j = i;
    if (j < n && s[j] == '-') j++;
    if (j >= n || !is_digit(s[j])) return P_INVALID;
    if (s[j] == '0') j++;
    else while (j < n && is_digit(s[j])) j++;
    if (j < n && s[j] == '.') {
        j++;
        if (j >= n || !is_digit(s[j])) return P_INVALID;
        while (j < n && is_digit(s[j])) j++;
    }
    if (j < n && (s[j] == 'e' || s[j] == 'E')) {
        j++;
        if (j < n && (s[j] == '+' || s[j] == '-')) j++;
        if (j >= n || !is_digit(s[j])) return P_INVALID;
        while (j < n && is_digit(s[j])) j++;
    }
    *end = j;
    return P_OK;
}

/* room for one more item in a growable array of ``size``-byte items: 0, or -1 (MemoryError) */
static int room(void **items, Py_ssize_t count, Py_ssize_t *capacity, size_t size,
                Py_ssize_t first) {
    Py_ssize_t wanted;
    void *grown;
    if (count < *capacity) return 0;
    wanted = *capacity ? *capacity * 2 : first;
    grown = PyMem_Realloc(*items, wanted * size);
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    *items = grown;
    *capacity = wanted;
    return 0;
}

static int note(Pass *pass, int kind, int where, Py_ssize_t key_start, Py_ssize_t value_start,
                Py_ssize_t value_end, Py_ssize_t string_start, Py_ssize_t string_end) {
    Member *member;
    if (room((void **)&pass->members, pass->count, &pass->capacity, sizeof(Member), 32) < 0)
        return P_ERROR;
    member = &pass->members[pass->count++];
    member->kind = kind;
    member->where = where;
    member->key_start = key_start;
    member->value_start = value_start;
    member->value_end = value_end;
    member->string_start = string_start;
    member->string_end = string_end;
    return P_OK;
}

static int read_value(Pass *pass, Py_ssize_t i, int depth, int where, Py_ssize_t *end,
                      int *kind);

static int key_is(const unsigned char *key, Py_ssize_t n, const char *name) {
    return n > 0 && key[0] == (unsigned char)name[0] && (Py_ssize_t)strlen(name) == n &&
           memcmp(key, name, n) == 0;
}

/* a member of the head to keep; a second one of the same name is left to Python */
static int keep(Span *span, Py_ssize_t start, Py_ssize_t end, int kind) {
    if (span->kind != V_NONE) return P_UNDECIDED;
    span->kind = kind;
    span->start = kind == V_STRING || kind == V_ESCAPED ? start + 1 : start;
    span->end = kind == V_STRING || kind == V_ESCAPED ? end - 1 : end;
    return P_OK;
}

static void set_type_date(Pass *pass) {
    Py_ssize_t index, length = pass->type.end - pass->type.start;
    for (index = 0; index < type_date_count; index++) {
        if (type_dates[index].type_length == length &&
            memcmp(type_dates[index].type, pass->s + pass->type.start, length) == 0) {
            pass->type_date = type_dates[index].key;
            pass->type_length = type_dates[index].key_length;
            return;
        }
    }
    pass->type_date = NULL;
    pass->type_length = 0;
}

/* a member of the resource itself (X_ROOT) or of its meta (X_META), when the head is read */
static int head_member(Pass *pass, int where, Py_ssize_t index, const unsigned char *key,
                       Py_ssize_t length, Py_ssize_t start, Py_ssize_t end, int kind) {
    int field;
    if (where == X_META) {
        if (key_is(key, length, "versionId")) return keep(&pass->version, start, end, kind);
        if (key_is(key, length, "lastUpdated")) return keep(&pass->updated, start, end, kind);
        return P_OK;
    }
    if (index == 0) {
        /* resourceType first, as FHIR's JSON writers put it: its type_date is then known for
         * the members that follow */
        if (!key_is(key, length, "resourceType") || kind != V_STRING) return P_UNDECIDED;
        keep(&pass->type, start, end, kind);
        set_type_date(pass);
        return P_OK;
    }
    if (key_is(key, length, "resourceType")) return P_UNDECIDED;
    if (key_is(key, length, "id")) return keep(&pass->id, start, end, kind);
    if (key_is(key, length, "meta")) return keep(&pass->meta, start, end, kind);
    for (field = 0; field < SUBJECT_FIELDS; field++)
        if (key_is(key, length, subject_names[field]))
            return keep(&pass->subjects[field], start, end, kind);
    return P_OK;
}

/* the "reference" member of an object that may name the resource's patient */
static int subject_reference(Pass *pass, int where, Py_ssize_t start, Py_ssize_t end, int kind,
                             int *seen) {
    SubjectReference *found;
    if (*seen || pass->reference_count == SUBJECT_REFERENCES) return P_UNDECIDED;
    *seen = 1;
    found = &pass->references[pass->reference_count++];
    found->field = (where - X_SUBJECT) / 2;
    found->value.kind = kind;
    found->value.start = kind == V_STRING ? start + 1 : start;
    found->value.end = kind == V_STRING ? end - 1 : end;
    return P_OK;
}

/* a member of a bundle's entry (X_ENTRY), or of its resource, request or response */
static int entry_member(Pass *pass, int where, const unsigned char *key, Py_ssize_t length,
                        Py_ssize_t start, Py_ssize_t end, int kind, int *child) {
    static const char *names[] = {"fullUrl", "resource", "request", "response", "resourceType",
                                  "id", "method", "url", "lastModified"};
    static const int first[] = {0, 0, 0, E_FULL_URL, E_TYPE, E_METHOD, E_MODIFIED};
    static const int last[] = {0, 0, 0, E_RESPONSE, E_ID, E_URL, E_MODIFIED};
    int index;
    for (index = first[where]; index <= last[where]; index++) {
        if (!key_is(key, length, names[index])) continue;
        if (child != NULL) {
            *child = index == E_RESOURCE ? X_RESOURCE : index == E_REQUEST ? X_REQUEST :
                     index == E_RESPONSE ? X_RESPONSE : X_NONE;
            return P_OK;
        }
        return keep(&pass->entry[index], start, end, kind);
    }
    return P_OK;
}

static int read_object(Pass *pass, Py_ssize_t i, int depth, int where, Py_ssize_t *end) {
    const unsigned char *s = pass->s;
    Py_ssize_t n = pass->n, j, index = 0;
    int seen_reference = 0;
    if (depth > MAX_DEPTH) return P_UNDECIDED;
    j = space(pass, i + 1);
    if (j < n && s[j] == '}') {
        *end = j + 1;
        return P_OK;
    }
    for (;;) {
        Py_ssize_t key_start = j, key_end, value_end, length;
        const unsigned char *key;
        int escaped, rc, cls, kind = 0, value_kind, child = X_NONE;
        if (j >= n || s[j] != '"') return P_INVALID;
        if ((rc = read_string(s, n, j, &key_end, &escaped)) != P_OK) return rc;
        j = space(pass, key_end);
        if (j >= n || s[j] != ':') return P_INVALID;
        j = space(pass, j + 1);
        if (j >= n) return P_INVALID;
        /* a key with an escape: the walk reads it decoded */
        if (escaped && (!pass->plain || where != X_NONE)) return P_UNDECIDED;
        key = s + key_start + 1;
        length = key_end - key_start - 2;
        cls = pass->plain ? C_NONE : classify(key, length, pass->type_date, pass->type_length,
                                              &kind);
        if (cls == C_MEMBER && s[j] != '"' &&
            (rc = note(pass, kind, where, key_start, -1, -1, -1, -1)) != P_OK)
            return rc;
        if (where == X_ROOT && pass->head) {
            int field;
            if (key_is(key, length, "meta")) child = X_META;
            else if (key_is(key, length, "text")) child = X_TEXT;
            for (field = 0; field < SUBJECT_FIELDS; field++)
                if (key_is(key, length, subject_names[field])) child = X_SUBJECT + 2 * field;
        } else if (where == X_ENTRY) {
            entry_member(pass, where, key, length, 0, 0, 0, &child);
        }
        if ((rc = read_value(pass, j, depth, child, &value_end, &value_kind)) != P_OK) return rc;
        if (cls != C_NONE && (value_kind == V_STRING || value_kind == V_ESCAPED)) {
            Py_ssize_t value_start = j + 1, value_stop = value_end - 1;
            if (cls != C_MEMBER) {
                if (value_kind == V_ESCAPED ||
                    !check(cls, s + value_start, value_stop - value_start))
                    return P_UNDECIDED;
            } else if (value_kind == V_ESCAPED) {
                if (kind == K_REFERENCE) return P_UNDECIDED; /* the walk reads it decoded */
                if ((rc = note(pass, kind, where, key_start, -1, -1, j, value_end)) != P_OK)
                    return rc;
            } else if ((rc = note(pass, kind, where, key_start, value_start, value_stop, j,
                                  value_end)) != P_OK) {
                return rc;
            }
        }
        if (pass->head && (where == X_ROOT || where == X_META) &&
            (rc = head_member(pass, where, index, key, length, j, value_end, value_kind)) != P_OK)
            return rc;
        if (where >= X_ENTRY && where <= X_RESPONSE &&
            (rc = entry_member(pass, where, key, length, j, value_end, value_kind, NULL)) !=
                P_OK)
            return rc;
        if (where >= X_SUBJECT && key_is(key, length, "reference") &&
            (rc = subject_reference(pass, where, j, value_end, value_kind, &seen_reference)) !=
                P_OK)
            return rc;
        j = space(pass, value_end);
        if (j < n && s[j] == ',') {
            j = space(pass, j + 1);
            index++;
            continue;
        }
        if (j < n && s[j] == '}') {
            *end = j + 1;
            return P_OK;
        }
        return P_INVALID;
    }
}

static int read_array(Pass *pass, Py_ssize_t i, int depth, int where, Py_ssize_t *end) {
    const unsigned char *s = pass->s;
    Py_ssize_t n = pass->n, j;
    /* the elements of a subject member's array may name the patient; nothing deeper does */
    int item = where >= X_SUBJECT && (where - X_SUBJECT) % 2 == 0 ? where + 1 : X_NONE;
    if (depth > MAX_DEPTH) return P_UNDECIDED;
    j = space(pass, i + 1);
    if (j < n && s[j] == ']') {
        *end = j + 1;
        return P_OK;
    }
    for (;;) {
        Py_ssize_t value_end;
        int rc, kind;
        if ((rc = read_value(pass, j, depth, item, &value_end, &kind)) != P_OK) return rc;
        j = space(pass, value_end);
        if (j < n && s[j] == ',') {
            j = space(pass, j + 1);
            continue;
        }
        if (j < n && s[j] == ']') {
            *end = j + 1;
            return P_OK;
        }
        return P_INVALID;
    }
}

static int literal(const unsigned char *s, Py_ssize_t n, Py_ssize_t i, const char *word,
                   Py_ssize_t *end) {
    Py_ssize_t length = (Py_ssize_t)strlen(word);
    if (n - i < length || memcmp(s + i, word, length) != 0) return P_INVALID;
    *end = i + length;
    return P_OK;
}

static int read_value(Pass *pass, Py_ssize_t i, int depth, int where, Py_ssize_t *end,
                      int *kind) {
    const unsigned char *s = pass->s;
    Py_ssize_t n = pass->n;
    int escaped, rc;
    if (i >= n) return P_INVALID;
    switch (s[i]) {
    case '{':
        *kind = V_OBJECT;
        return read_object(pass, i, depth + 1, where, end);
    case '[':
        *kind = V_ARRAY;
        return read_array(pass, i, depth + 1, where, end);
    case '"':
        rc = read_string(s, n, i, end, &escaped);
        *kind = escaped ? V_ESCAPED : V_STRING;
        return rc;
    case 't':
        *kind = V_OTHER;
        return literal(s, n, i, "true", end);
    case 'f':
        *kind = V_OTHER;
        return literal(s, n, i, "false", end);
    case 'n':
        *kind = V_NULL;
        return literal(s, n, i, "null", end);
    default:
        *kind = V_OTHER;
        return read_number(s, n, i, end);
    }
}

/* The pass over a whole text, which must be one JSON object. */
static int read_resource(Pass *pass) {
    Py_ssize_t start = space(pass, 0), end;
    int rc, kind;
    if (start >= pass->n || pass->s[start] != '{') return P_INVALID;
    rc = read_value(pass, start, 0, X_ROOT, &end, &kind);
    if (rc != P_OK) return rc;
    return space(pass, end) == pass->n ? P_OK : P_INVALID;
}

static void pass_begin(Pass *pass, const void *body, Py_ssize_t n) {
    Member *members = pass->members;
    Py_ssize_t capacity = pass->capacity;
    memset(pass, 0, sizeof(*pass));
    pass->members = members;
    pass->capacity = capacity;
    pass->s = body;
    pass->n = n;
}

static PyObject *scan(PyObject *self, PyObject *args) {
    Py_buffer body, type_date;
    Pass pass = {0};
    PyObject *found = NULL;
    Py_ssize_t index;
    int rc;
    if (!PyArg_ParseTuple(args, "y*y*", &body, &type_date)) return NULL;
    pass_begin(&pass, body.buf, body.len);
    pass.type_date = type_date.buf;
    pass.type_length = type_date.len;
    rc = read_resource(&pass);
    if (rc == P_OK) {
        found = PyList_New(pass.count);
        for (index = 0; found != NULL && index < pass.count; index++) {
            Member *member = &pass.members[index];
            PyObject *item = Py_BuildValue("(innn)", member->kind, member->key_start,
                                           member->value_start, member->value_end);
            if (item == NULL) Py_CLEAR(found);
            else PyList_SET_ITEM(found, index, item);
        }
    } else if (rc != P_ERROR) {
        found = Py_NewRef(Py_None);
    }
    PyMem_Free(pass.members);
    PyBuffer_Release(&body);
    PyBuffer_Release(&type_date);
    return found;
}

/* validate(body): "ok", "undecided" or "invalid", for the tests of the pass itself */
static PyObject *validate(PyObject *self, PyObject *args) {
    Py_buffer body;
    Pass pass = {0};
    int rc;
    if (!PyArg_ParseTuple(args, "y*", &body)) return NULL;
    pass_begin(&pass, body.buf, body.len);
    pass.head = 1;
    rc = read_resource(&pass);
    PyMem_Free(pass.members);
    PyBuffer_Release(&body);
    if (rc == P_ERROR) return NULL;
    return PyUnicode_FromString(rc == P_OK ? "ok" : rc == P_UNDECIDED ? "undecided" : "invalid");
}

/* --- bundles ---------------------------------------------------------------------------------- */

/* A member as Python reads it: a str for a string without escapes, None for anything else;
 * NULL with ``*escaped`` set for an escaped string, which Python decodes. */
static PyObject *text_of(const unsigned char *s, Span *span, int empty_is_none, int *escaped) {
    if (span->kind == V_ESCAPED) {
        *escaped = 1;
        return NULL;
    }
    if (span->kind != V_STRING || (empty_is_none && span->end == span->start))
        return Py_NewRef(Py_None);
    return PyUnicode_DecodeUTF8((const char *)s + span->start, span->end - span->start,
                                "strict");
}

/* One entry of a bundle at i: appended to ``entries`` as (full_url, start, end, resource_type,
 * id, method, url, last_modified). P_UNDECIDED for a shape Python reads itself. */
static int bundle_entry(Pass *pass, Py_ssize_t i, Py_ssize_t *end, PyObject *entries) {
    const unsigned char *s = pass->s;
    Span *found = pass->entry;
    PyObject *values[6] = {NULL}, *item = NULL;
    Py_ssize_t start = -1, stop = -1;
    int kind, rc, escaped = 0, index;
    if (s[i] != '{') return P_UNDECIDED;
    memset(pass->entry, 0, sizeof(pass->entry));
    if ((rc = read_value(pass, i, 1, X_ENTRY, end, &kind)) != P_OK) return rc;
    if (found[E_RESOURCE].kind == V_OBJECT) {
        start = found[E_RESOURCE].start;
        stop = found[E_RESOURCE].end;
        if ((found[E_TYPE].kind != V_NONE && found[E_TYPE].kind != V_STRING) ||
            (found[E_ID].kind != V_NONE && found[E_ID].kind != V_STRING))
            return P_UNDECIDED;
    } else if (found[E_RESOURCE].kind != V_NONE) {
        return P_UNDECIDED;
    }
    if (found[E_REQUEST].kind != V_OBJECT) found[E_METHOD].kind = found[E_URL].kind = V_NONE;
    if (found[E_RESPONSE].kind != V_OBJECT) found[E_MODIFIED].kind = V_NONE;
    values[0] = text_of(s, &found[E_FULL_URL], 0, &escaped);
    values[1] = values[0] ? text_of(s, &found[E_TYPE], 0, &escaped) : NULL;
    values[2] = values[1] ? text_of(s, &found[E_ID], 0, &escaped) : NULL;
    values[3] = values[2] ? text_of(s, &found[E_METHOD], 1, &escaped) : NULL;
    values[4] = values[3] ? text_of(s, &found[E_URL], 1, &escaped) : NULL;
    values[5] = values[4] ? text_of(s, &found[E_MODIFIED], 1, &escaped) : NULL;
    if (values[5] != NULL)
        item = Py_BuildValue("(OnnOOOOO)", values[0], start, stop, values[1], values[2],
                             values[3], values[4], values[5]);
    for (index = 0; index < 6; index++) Py_XDECREF(values[index]);
    if (item == NULL) return escaped && !PyErr_Occurred() ? P_UNDECIDED : P_ERROR;
    rc = PyList_Append(entries, item);
    Py_DECREF(item);
    return rc < 0 ? P_ERROR : P_OK;
}

static int bundle_entries(Pass *pass, Py_ssize_t i, Py_ssize_t *end, PyObject *entries) {
    const unsigned char *s = pass->s;
    Py_ssize_t j = space(pass, i + 1), entry_end;
    int rc;
    if (s[i] != '[') return P_UNDECIDED;
    if (j < pass->n && s[j] == ']') {
        *end = j + 1;
        return P_OK;
    }
    for (;;) {
        if (j >= pass->n) return P_INVALID;
        if ((rc = bundle_entry(pass, j, &entry_end, entries)) != P_OK) return rc;
        j = space(pass, entry_end);
        if (j < pass->n && s[j] == ',') {
            j = space(pass, j + 1);
            continue;
        }
        if (j < pass->n && s[j] == ']') {
            *end = j + 1;
            return P_OK;
        }
        return P_INVALID;
    }
}

/* bundle(text) -> (type, spaced, [(full_url, start, end, resource_type, id, method, url,
 * last_modified), ...]) for a Bundle whose shape this pass reads: resources as objects, their
 * resourceType and id, fullUrl, request and response members as strings without escapes; start
 * and end bound an entry's resource (-1 without one), spaced tells whether whitespace was met
 * between tokens. None for anything else, including text that is not JSON: Python reads it. */
static PyObject *bundle(PyObject *self, PyObject *args) {
    Py_buffer text;
    Pass pass = {0};
    PyObject *entries = NULL, *type = NULL, *result = NULL;
    Py_ssize_t j, key_end, value_end;
    int rc = P_OK, kind, escaped, seen_type = 0, seen_entries = 0, is_bundle = 0;
    if (!PyArg_ParseTuple(args, "y*", &text)) return NULL;
    pass_begin(&pass, text.buf, text.len);
    pass.plain = 1;
    entries = PyList_New(0);
    if (entries == NULL) goto done;
    j = space(&pass, 0);
    if (j >= pass.n || pass.s[j] != '{') {
        rc = P_UNDECIDED;
        goto done;
    }
    j = space(&pass, j + 1);
    if (j < pass.n && pass.s[j] == '}') j++;
    else for (;;) {
        Py_ssize_t key_start = j + 1, value_start;
        if (j >= pass.n || pass.s[j] != '"') {
            rc = P_INVALID;
            break;
        }
        if ((rc = read_string(pass.s, pass.n, j, &key_end, &escaped)) != P_OK) break;
        if (escaped) {
            rc = P_UNDECIDED;
            break;
        }
        j = space(&pass, key_end);
        if (j >= pass.n || pass.s[j] != ':') {
            rc = P_INVALID;
            break;
        }
        value_start = j = space(&pass, j + 1);
        if (j >= pass.n) {
            rc = P_INVALID;
            break;
        }
        if (key_is(pass.s + key_start, key_end - key_start - 1, "entry")) {
            if (seen_entries++) rc = P_UNDECIDED;
            else rc = bundle_entries(&pass, j, &value_end, entries);
        } else {
            rc = read_value(&pass, j, 1, X_NONE, &value_end, &kind);
            if (rc == P_OK && key_is(pass.s + key_start, key_end - key_start - 1,
                                     "resourceType")) {
                if (is_bundle || kind != V_STRING || value_end - value_start != 8 ||
                    memcmp(pass.s + value_start, "\"Bundle\"", 8) != 0)
                    rc = P_UNDECIDED;
                is_bundle = 1;
            } else if (rc == P_OK && key_is(pass.s + key_start, key_end - key_start - 1,
                                            "type")) {
                if (seen_type++ || kind == V_ESCAPED) rc = P_UNDECIDED;
                else if (kind == V_STRING &&
                         (type = PyUnicode_DecodeUTF8((const char *)pass.s + value_start + 1,
                                                      value_end - value_start - 2,
                                                      "strict")) == NULL)
                    rc = P_ERROR;
            }
        }
        if (rc != P_OK) break;
        j = space(&pass, value_end);
        if (j < pass.n && pass.s[j] == ',') {
            j = space(&pass, j + 1);
            continue;
        }
        if (j < pass.n && pass.s[j] == '}') {
            j++;
            break;
        }
        rc = P_INVALID;
        break;
    }
    if (rc == P_OK && space(&pass, j) != pass.n) rc = P_INVALID;
    if (rc == P_OK && !is_bundle) rc = P_UNDECIDED;
done:
    if (rc == P_OK && entries != NULL) {
        result = Py_BuildValue("(OOO)", type ? type : Py_None,
                               pass.spaced ? Py_True : Py_False, entries);
    } else if (rc != P_ERROR && entries != NULL && !PyErr_Occurred()) {
        result = Py_NewRef(Py_None);
    }
    Py_XDECREF(type);
    Py_XDECREF(entries);
    PyMem_Free(pass.members);
    PyBuffer_Release(&text);
    return result;
}

/* --- Arrow columns ---------------------------------------------------------------------------- */

typedef struct {
    char *data;
    Py_ssize_t length, capacity;
} Buffer;

static int grow(Buffer *buffer, Py_ssize_t extra) {
    Py_ssize_t need = buffer->length + extra, capacity = buffer->capacity ? buffer->capacity : 256;
    char *grown;
    if (need <= buffer->capacity) return 0;
    while (capacity < need) capacity *= 2;
    grown = PyMem_Realloc(buffer->data, capacity);
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    buffer->data = grown;
    buffer->capacity = capacity;
    return 0;
}

static int put(Buffer *buffer, const void *data, Py_ssize_t length) {
    if (grow(buffer, length) < 0) return -1;
    memcpy(buffer->data + buffer->length, data, length);
    buffer->length += length;
    return 0;
}

/* a string column: int32 offsets, the bytes, a validity bitmap */
typedef struct {
    Buffer offsets, data, valid;
    Py_ssize_t nulls;
} Column;

static int mark(Buffer *valid, Py_ssize_t row, int present) {
    if ((row & 7) == 0) {
        if (grow(valid, 1) < 0) return -1;
        valid->data[valid->length++] = 0;
    }
    if (present) valid->data[row >> 3] |= (char)(1 << (row & 7));
    return 0;
}

/* Open a value of row ``row``; its bytes are then put in ``column->data``, and ``close_value``
 * ends it. A null is opened and closed with nothing between. */
static int open_value(Column *column, Py_ssize_t row, int present) {
    if (row == 0 && column->offsets.length == 0) {
        int32_t zero = 0;
        if (put(&column->offsets, &zero, 4) < 0) return -1;
    }
    if (mark(&column->valid, row, present) < 0) return -1;
    column->nulls += !present;
    return 0;
}

static int close_value(Column *column) {
    int32_t offset;
    if (column->data.length > INT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "a column of one batch grew past 2 GB");
        return -1;
    }
    offset = (int32_t)column->data.length;
    return put(&column->offsets, &offset, 4);
}

static int column_put(Column *column, Py_ssize_t row, const void *data, Py_ssize_t length) {
    if (open_value(column, row, data != NULL) < 0) return -1;
    if (data != NULL && put(&column->data, data, length) < 0) return -1;
    return close_value(column);
}

static void column_free(Column *column) {
    PyMem_Free(column->offsets.data);
    PyMem_Free(column->data.data);
    PyMem_Free(column->valid.data);
    memset(column, 0, sizeof(*column));
}

static PyObject *column_take(Column *column) {
    return Py_BuildValue("(y#y#y#n)", column->valid.data, column->valid.length,
                         column->offsets.data, column->offsets.length, column->data.data,
                         column->data.length, column->nulls);
}

/* the columns Rows builds, in the order of bronze.BATCH_SCHEMA (less resource_type, load_id and
 * loaded_at, which are the same for every row of a batch) */
enum { COL_ID, COL_VERSION, COL_PATIENT, COL_SOURCE, COL_RESOURCE, COL_HASH, COL_OP, COLUMNS };

typedef struct {
    PyObject *name;  /* the resource type */
    char *key;       /* its UTF-8 bytes */
    Py_ssize_t key_length, rows;
    int fast;        /* 1 once the type is known to take the fast path */
    Column columns[COLUMNS];
    Buffer updated, updated_valid;
    Py_ssize_t updated_nulls;
} Batch;

static void batch_free(Batch *batch) {
    int index;
    Py_CLEAR(batch->name);
    PyMem_Free(batch->key);
    for (index = 0; index < COLUMNS; index++) column_free(&batch->columns[index]);
    PyMem_Free(batch->updated.data);
    PyMem_Free(batch->updated_valid.data);
    memset(batch, 0, sizeof(*batch));
}

static int put_updated(Batch *batch, const int64_t *micros) {
    int64_t value = micros ? *micros : 0;
    if (mark(&batch->updated_valid, batch->rows, micros != NULL) < 0) return -1;
    batch->updated_nulls += micros == NULL;
    return put(&batch->updated, &value, 8);
}

/* --- Rows ------------------------------------------------------------------------------------- */

typedef struct {
    Py_ssize_t start, end;
    PyObject *text; /* bytes, owned */
} Splice;

typedef struct {
    PyObject_HEAD
    SHA256_CTX inner, outer;    /* HMAC-SHA256 under the index key, its pads absorbed */
    PyObject *sealers;          /* dict: "Patient/<id>" -> (pseudonym, sealer) */
    PyObject *patient_sealer;   /* callable("Patient/<id>") -> (pseudonym, sealer) | None */
    PyObject *reference_text;   /* callable(mapped, display) -> bytes | None */
    PyObject *seal_value;       /* callable(sealer, JSON text with escapes) -> token */
    PyObject *references;       /* dict: mapped + display -> bytes, reference_text remembered */
    PyObject *slow_types;       /* frozenset of bytes: types the walk always takes */
    PyObject *token_prefix;     /* bytes: '"' and the prefix of a sealed token */
    PyObject *source;           /* str */
    PyObject *seal_name;        /* "seal_json" */
    Batch *batches;
    Py_ssize_t batch_count, batch_capacity, last;
    Py_ssize_t unresolved;
    Pass pass;
    Splice *splices;
    Py_ssize_t splice_count, splice_capacity;
} Rows;

static void rows_clear_batches(Rows *rows) {
    Py_ssize_t index;
    for (index = 0; index < rows->batch_count; index++) batch_free(&rows->batches[index]);
    rows->batch_count = 0;
    rows->last = -1;
}

static void release_splices(Rows *rows) {
    Py_ssize_t index;
    for (index = 0; index < rows->splice_count; index++) Py_CLEAR(rows->splices[index].text);
    rows->splice_count = 0;
}

static int Rows_traverse(Rows *rows, visitproc visit, void *arg) {
    Py_ssize_t index;
    Py_VISIT(rows->sealers);
    Py_VISIT(rows->patient_sealer);
    Py_VISIT(rows->reference_text);
    Py_VISIT(rows->seal_value);
    Py_VISIT(rows->references);
    for (index = 0; index < rows->splice_count; index++) Py_VISIT(rows->splices[index].text);
    return 0;
}

static int Rows_clear(Rows *rows) {
    release_splices(rows);
    rows_clear_batches(rows);
    Py_CLEAR(rows->sealers);
    Py_CLEAR(rows->patient_sealer);
    Py_CLEAR(rows->reference_text);
    Py_CLEAR(rows->seal_value);
    Py_CLEAR(rows->references);
    Py_CLEAR(rows->slow_types);
    Py_CLEAR(rows->token_prefix);
    Py_CLEAR(rows->source);
    Py_CLEAR(rows->seal_name);
    return 0;
}

static void Rows_dealloc(Rows *rows) {
    PyObject_GC_UnTrack(rows);
    Rows_clear(rows);
    PyMem_Free(rows->batches);
    PyMem_Free(rows->pass.members);
    PyMem_Free(rows->splices);
    Py_TYPE(rows)->tp_free((PyObject *)rows);
}

/* Rows(index_key, sealers, patient_sealer, reference_text, seal_value, slow_types, token_prefix,
 *      source, references=None): references is the dict that remembers reference_text's
 *      answers */
static int Rows_init(Rows *rows, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"index_key", "sealers", "patient_sealer", "reference_text",
                            "seal_value", "slow_types", "token_prefix", "source", "references",
                            NULL};
    Py_buffer key;
    PyObject *sealers, *patient_sealer, *reference_text, *seal_value, *slow_types, *token_prefix;
    PyObject *source, *references = NULL;
    unsigned char block[SHA256_CBLOCK], pad[SHA256_CBLOCK];
    int index;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*O!OOOO!SU|O!", names, &key, &PyDict_Type,
                                     &sealers, &patient_sealer, &reference_text, &seal_value,
                                     &PyFrozenSet_Type, &slow_types, &token_prefix, &source,
                                     &PyDict_Type, &references))
        return -1;
    memset(block, 0, sizeof(block));
    if (key.len > SHA256_CBLOCK) SHA256(key.buf, key.len, block);
    else memcpy(block, key.buf, key.len);
    PyBuffer_Release(&key);
    for (index = 0; index < SHA256_CBLOCK; index++) pad[index] = block[index] ^ 0x36;
    SHA256_Init(&rows->inner);
    SHA256_Update(&rows->inner, pad, SHA256_CBLOCK);
    for (index = 0; index < SHA256_CBLOCK; index++) pad[index] = block[index] ^ 0x5c;
    SHA256_Init(&rows->outer);
    SHA256_Update(&rows->outer, pad, SHA256_CBLOCK);
    Rows_clear(rows);
    rows->sealers = Py_NewRef(sealers);
    rows->patient_sealer = Py_NewRef(patient_sealer);
    rows->reference_text = Py_NewRef(reference_text);
    rows->seal_value = Py_NewRef(seal_value);
    rows->slow_types = Py_NewRef(slow_types);
    rows->token_prefix = Py_NewRef(token_prefix);
    rows->source = Py_NewRef(source);
    rows->references = references ? Py_NewRef(references) : PyDict_New();
    rows->seal_name = PyUnicode_InternFromString("seal_json");
    rows->last = -1;
    return rows->references && rows->seal_name ? 0 : -1;
}

static void content_hash(Rows *rows, const unsigned char *body, Py_ssize_t n, char out[32]) {
    static const char digits[] = "0123456789abcdef";
    unsigned char digest[SHA256_DIGEST_LENGTH];
    SHA256_CTX context = rows->inner;
    int index;
    SHA256_Update(&context, body, n);
    SHA256_Final(digest, &context);
    context = rows->outer;
    SHA256_Update(&context, digest, SHA256_DIGEST_LENGTH);
    SHA256_Final(digest, &context);
    for (index = 0; index < 16; index++) {
        out[2 * index] = digits[digest[index] >> 4];
        out[2 * index + 1] = digits[digest[index] & 15];
    }
}

static Batch *batch_for(Rows *rows, const char *key, Py_ssize_t length, PyObject *name) {
    Py_ssize_t index;
    Batch *batch;
    if (rows->last >= 0 && rows->batches[rows->last].key_length == length &&
        memcmp(rows->batches[rows->last].key, key, length) == 0)
        return &rows->batches[rows->last];
    for (index = 0; index < rows->batch_count; index++) {
        if (rows->batches[index].key_length == length &&
            memcmp(rows->batches[index].key, key, length) == 0) {
            rows->last = index;
            return &rows->batches[index];
        }
    }
    if (room((void **)&rows->batches, rows->batch_count, &rows->batch_capacity, sizeof(Batch),
             8) < 0)
        return NULL;
    batch = &rows->batches[rows->batch_count];
    memset(batch, 0, sizeof(*batch));
    batch->key = PyMem_Malloc(length ? length : 1);
    batch->name = name ? Py_NewRef(name) : PyUnicode_DecodeUTF8(key, length, "strict");
    if (batch->key == NULL || batch->name == NULL) {
        batch_free(batch);
        if (!PyErr_Occurred()) PyErr_NoMemory();
        return NULL;
    }
    memcpy(batch->key, key, length);
    batch->key_length = length;
    rows->last = rows->batch_count++;
    return batch;
}

static int put_source(Rows *rows, Batch *batch) {
    Py_ssize_t length;
    const char *text = PyUnicode_AsUTF8AndSize(rows->source, &length);
    if (text == NULL) return -1;
    return column_put(&batch->columns[COL_SOURCE], batch->rows, text, length);
}

/* Where ``text`` (n bytes) names a patient, as pseudonym.patient_target reads it: *id_start and
 * *id_end bound the id, *history is where the /_history/ suffix begins (n when there is none). */
static int patient_target(const unsigned char *text, Py_ssize_t n, Py_ssize_t *id_start,
                          Py_ssize_t *id_end, Py_ssize_t *history) {
    Py_ssize_t at;
    if (n == 0 || text[0] == '#' || (n >= 4 && memcmp(text, "urn:", 4) == 0) ||
        memchr(text, '?', n) != NULL)
        return 0;
    for (at = 0; at + 8 <= n; at++) {
        Py_ssize_t j = at + 8, start = j;
        if (memcmp(text + at, "Patient/", 8) != 0 || (at > 0 && text[at - 1] != '/')) continue;
        while (j < n && (alnum(text[j]) || text[j] == '-' || text[j] == '.')) j++;
        if (j == start || j - start > 64) continue;
        if (j < n) {
            Py_ssize_t k = j + 10;
            if (n - j <= 10 || memcmp(text + j, "/_history/", 10) != 0) continue;
            while (k < n && text[k] != '/') k++;
            if (k != n) continue;
        }
        *id_start = start;
        *id_end = j;
        *history = j;
        return 1;
    }
    return 0;
}

static int starts(const unsigned char *text, Py_ssize_t n, const char *prefix) {
    Py_ssize_t length = (Py_ssize_t)strlen(prefix);
    return n >= length && memcmp(text, prefix, length) == 0;
}

/* bytes of a mapped reference that fastpath would JSON-encode with escapes, or compare as text
 * other than ASCII: left to Python */
static int plain_ascii(const unsigned char *text, Py_ssize_t n) {
    Py_ssize_t index;
    for (index = 0; index < n; index++)
        if (text[index] < 0x20 || text[index] >= 0x7f || text[index] == '"' ||
            text[index] == '\\')
            return 0;
    return 1;
}

static int splice(Rows *rows, Py_ssize_t start, Py_ssize_t end, PyObject *text) {
    if (room((void **)&rows->splices, rows->splice_count, &rows->splice_capacity,
             sizeof(Splice), 16) < 0) {
        Py_DECREF(text);
        return -1;
    }
    rows->splices[rows->splice_count].start = start;
    rows->splices[rows->splice_count].end = end;
    rows->splices[rows->splice_count].text = text; /* stolen */
    rows->splice_count++;
    return 0;
}

/* The patient's (pseudonym, sealer) for "Patient/<id>", a new reference, or NULL with an error.
 * Py_None when there is none. */
static PyObject *patient_for(Rows *rows, const unsigned char *target, Py_ssize_t n) {
    PyObject *key = PyUnicode_DecodeUTF8((const char *)target, n, "strict"), *found;
    if (key == NULL) return NULL;
    found = PyDict_GetItemWithError(rows->sealers, key);
    if (found != NULL) {
        Py_DECREF(key);
        return Py_NewRef(found);
    }
    if (PyErr_Occurred()) {
        Py_DECREF(key);
        return NULL;
    }
    found = PyObject_CallOneArg(rows->patient_sealer, key);
    Py_DECREF(key);
    if (found != NULL && found != Py_None &&
        (!PyTuple_Check(found) || PyTuple_GET_SIZE(found) != 2 ||
         !PyUnicode_Check(PyTuple_GET_ITEM(found, 0)))) {
        Py_DECREF(found);
        PyErr_SetString(PyExc_TypeError, "patient_sealer must return (pseudonym, sealer) or None");
        return NULL;
    }
    return found;
}

/* The whole reference object around the member at key_start, when it is
 * {"reference":"...","display":"..."} or {"reference":"..."} without escapes or spaces (the
 * value's contents end at value_end): *end is past it, *display_start and *display_end bound the
 * display's contents (-1 without one). */
static int reference_object(const unsigned char *s, Py_ssize_t n, Py_ssize_t key_start,
                            Py_ssize_t value_start, Py_ssize_t value_end, Py_ssize_t *end,
                            Py_ssize_t *display_start, Py_ssize_t *display_end) {
    Py_ssize_t j = value_end + 1, k;
    if (key_start < 1 || s[key_start - 1] != '{' || value_start != key_start + 13 ||
        !starts(s + key_start, n - key_start, "\"reference\":\""))
        return 0;
    *display_start = *display_end = -1;
    if (j < n && s[j] == '}') {
        *end = j + 1;
        return 1;
    }
    if (!starts(s + j, n - j, ",\"display\":\"")) return 0;
    k = *display_start = j + 12;
    while (k < n && s[k] != '"' && s[k] != '\\') k++;
    if (k + 1 >= n || s[k] != '"' || s[k + 1] != '}') return 0;
    *display_end = k;
    *end = k + 2;
    return 1;
}

/* The pseudonymized text of a reference to a patient, remembered by mapped reference and
 * display: a new reference to bytes, Py_None when Python says the fast path cannot write it,
 * NULL on an error. */
static PyObject *reference_text(Rows *rows, const unsigned char *mapped, Py_ssize_t mapped_length,
                                const unsigned char *s, Py_ssize_t display_start,
                                Py_ssize_t display_end) {
    Py_ssize_t display_length = display_start < 0 ? 0 : display_end - display_start;
    PyObject *key = PyBytes_FromStringAndSize(NULL, mapped_length + 1 + display_length), *text;
    PyObject *mapped_text, *display;
    char *raw;
    if (key == NULL) return NULL;
    raw = PyBytes_AS_STRING(key);
    memcpy(raw, mapped, mapped_length);
    raw[mapped_length] = display_start < 0 ? 0 : 1;
    if (display_length) memcpy(raw + mapped_length + 1, s + display_start, display_length);
    text = PyDict_GetItemWithError(rows->references, key);
    if (text != NULL || PyErr_Occurred()) {
        Py_DECREF(key);
        return text ? Py_NewRef(text) : NULL;
    }
    mapped_text = PyUnicode_DecodeUTF8((const char *)mapped, mapped_length, "strict");
    display = display_start < 0 ? Py_NewRef(Py_None)
                                : PyBytes_FromStringAndSize((const char *)s + display_start,
                                                            display_length);
    text = mapped_text && display ? PyObject_CallFunctionObjArgs(rows->reference_text,
                                                                 mapped_text, display, NULL)
                                  : NULL;
    Py_XDECREF(mapped_text);
    Py_XDECREF(display);
    if (text != NULL && text != Py_None) {
        if (!PyBytes_Check(text)) {
            Py_DECREF(text);
            Py_DECREF(key);
            PyErr_SetString(PyExc_TypeError, "reference_text must return bytes or None");
            return NULL;
        }
        if (PyDict_GET_SIZE(rows->references) >= CACHE_ENTRIES) PyDict_Clear(rows->references);
        if (PyDict_SetItem(rows->references, key, text) < 0) Py_CLEAR(text);
    }
    Py_DECREF(key);
    return text;
}

/* The JSON value at s (n bytes) sealed for the patient, as the text that replaces it:
 * '"' + token + '"'. A value without escapes is sealed as written (what Protector seals is the
 * value written by msgspec, the same text); one with escapes is decoded and written again first,
 * by Python (seal_value). */
static PyObject *sealed(Rows *rows, PyObject *sealer, const unsigned char *s, Py_ssize_t n,
                        int escaped) {
    PyObject *value = PyBytes_FromStringAndSize((const char *)s, n), *token, *text;
    const char *token_text;
    Py_ssize_t token_length;
    if (value == NULL) return NULL;
    token = escaped ? PyObject_CallFunctionObjArgs(rows->seal_value, sealer, value, NULL)
                    : PyObject_CallMethodOneArg(sealer, rows->seal_name, value);
    Py_DECREF(value);
    if (token == NULL) return NULL;
    token_text = PyUnicode_Check(token) ? PyUnicode_AsUTF8AndSize(token, &token_length) : NULL;
    if (token_text == NULL) {
        Py_DECREF(token);
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "a seal must return str");
        return NULL;
    }
    text = PyBytes_FromStringAndSize(NULL, token_length + 2);
    if (text != NULL) {
        PyBytes_AS_STRING(text)[0] = '"';
        memcpy(PyBytes_AS_STRING(text) + 1, token_text, token_length);
        PyBytes_AS_STRING(text)[token_length + 1] = '"';
    }
    Py_DECREF(token);
    return text;
}

/* An attachment's data and url sealed, as FastPath._attachment does: the object around the key
 * at key_start must be flat and open with contentType. Returns 1 (spliced), 0 (Python
 * decides) or -1 (error). */
static int attachment(Rows *rows, const unsigned char *s, Py_ssize_t n, Py_ssize_t key_start,
                      PyObject *sealer) {
    Py_ssize_t j = key_start;
    const char *prefix = PyBytes_AS_STRING(rows->token_prefix);
    Py_ssize_t prefix_length = PyBytes_GET_SIZE(rows->token_prefix);
    if (key_start < 1 || s[key_start - 1] != '{') return 0;
    for (;;) {
        Py_ssize_t name_start, name_end, value_start, value_end;
        if (j >= n || s[j] != '"') return 0;
        name_start = ++j;
        while (j < n && ((s[j] >= 'A' && s[j] <= 'Z') || (s[j] >= 'a' && s[j] <= 'z'))) j++;
        if (j == name_start || j + 1 >= n || s[j] != '"' || s[j + 1] != ':') return 0;
        name_end = j;
        value_start = j += 2;
        if (j < n && s[j] == '"') {
            for (j++; j < n && s[j] != '"' && s[j] != '\\'; j++) {}
            if (j >= n || s[j] != '"') return 0;
            j++;
        } else if (j < n && (s[j] == '-' || is_digit(s[j]))) {
            if (s[j] == '-') j++;
            if (j >= n || !is_digit(s[j])) return 0;
            while (j < n && (is_digit(s[j]) || s[j] == '.' || s[j] == 'e' || s[j] == 'E' ||
                             s[j] == '+' || s[j] == '-'))
                j++;
        } else if (starts(s + j, n - j, "true")) {
            j += 4;
        } else if (starts(s + j, n - j, "false")) {
            j += 5;
        } else if (starts(s + j, n - j, "null")) {
            j += 4;
        } else {
            return 0;
        }
        value_end = j;
        if (j >= n || (s[j] != ',' && s[j] != '}')) return 0;
        if ((key_is(s + name_start, name_end - name_start, "data") ||
             key_is(s + name_start, name_end - name_start, "url")) &&
            !(value_end - value_start >= prefix_length &&
              memcmp(s + value_start, prefix, prefix_length) == 0)) {
            PyObject *text = sealed(rows, sealer, s + value_start, value_end - value_start, 0);
            if (text == NULL || splice(rows, value_start, value_end, text) < 0) return -1;
        }
        if (s[j] == '}') return 1;
        j++;
    }
}


/* A reference as the bundle's urn map rewrites it: 1 with *out (and *owner holding it) when the
 * map has it, 0 when it does not, 2 when Python must decide (a mapping that is not plain ASCII
 * text), -1 on an error. */
static int resolve(PyObject *urn_map, const unsigned char *reference, Py_ssize_t length,
                   const unsigned char **out, Py_ssize_t *out_length, PyObject **owner) {
    PyObject *key, *mapped;
    *owner = NULL;
    if (PyDict_GET_SIZE(urn_map) == 0) return 0;
    key = PyUnicode_DecodeUTF8((const char *)reference, length, "strict");
    if (key == NULL) return -1;
    mapped = PyDict_GetItemWithError(urn_map, key);
    Py_DECREF(key);
    if (mapped == NULL) return PyErr_Occurred() ? -1 : 0;
    if (!PyUnicode_Check(mapped)) return 2;
    *out = (const unsigned char *)PyUnicode_AsUTF8AndSize(mapped, out_length);
    if (*out == NULL) return -1;
    if (!plain_ascii(*out, *out_length)) return 2;
    *owner = Py_NewRef(mapped);
    return 1;
}

/* The patient the resource is about, as transform.first_patient finds it among the subject
 * members: its (pseudonym, sealer) in *patient (NULL when there is none). Returns 1, 0 when
 * Python must decide, -1 on an error. */
static int find_patient(Rows *rows, PyObject *urn_map, PyObject **patient) {
    Pass *pass = &rows->pass;
    int field;
    Py_ssize_t index;
    *patient = NULL;
    for (field = 0; field < SUBJECT_FIELDS; field++) {
        for (index = 0; index < pass->reference_count; index++) {
            SubjectReference *found = &pass->references[index];
            const unsigned char *reference = pass->s + found->value.start;
            Py_ssize_t length = found->value.end - found->value.start, id_start, id_end, history;
            PyObject *owner;
            int rc;
            if (found->field != field || found->value.kind != V_STRING) continue;
            rc = resolve(urn_map, reference, length, &reference, &length, &owner);
            if (rc < 0 || rc == 2) return rc < 0 ? -1 : 0;
            if (patient_target(reference, length, &id_start, &id_end, &history)) {
                *patient = patient_for(rows, reference + id_start - 8, id_end - id_start + 8);
                Py_XDECREF(owner);
                if (*patient == NULL) return -1;
                if (*patient == Py_None) Py_CLEAR(*patient);
                return 1;
            }
            Py_XDECREF(owner);
        }
    }
    return 1;
}

static int resource_type_ok(const unsigned char *s, Py_ssize_t n) {
    Py_ssize_t index;
    if (n < 2 || n > 64 || s[0] < 'A' || s[0] > 'Z') return 0;
    for (index = 1; index < n; index++)
        if (!((s[index] >= 'A' && s[index] <= 'Z') || (s[index] >= 'a' && s[index] <= 'z')))
            return 0;
    return 1;
}

static int fhir_id_ok(const unsigned char *s, Py_ssize_t n) {
    Py_ssize_t index;
    if (n < 1 || n > 64) return 0;
    for (index = 0; index < n; index++)
        if (!(alnum(s[index]) || s[index] == '-' || s[index] == '.')) return 0;
    return 1;
}

/* whether the fast path takes this type (not one of slow_types), remembered in its batch */
static int fast_type(Rows *rows, const unsigned char *type, Py_ssize_t length) {
    PyObject *name;
    Batch *batch = NULL;
    int slow;
    Py_ssize_t index;
    for (index = 0; index < rows->batch_count; index++) {
        if (rows->batches[index].key_length == length &&
            memcmp(rows->batches[index].key, type, length) == 0) {
            batch = &rows->batches[index];
            if (batch->fast) return 1;
            break;
        }
    }
    name = PyBytes_FromStringAndSize((const char *)type, length);
    if (name == NULL) return -1;
    slow = PySet_Contains(rows->slow_types, name);
    Py_DECREF(name);
    if (slow < 0) return -1;
    if (batch != NULL && !slow) batch->fast = 1;
    return !slow;
}

static PyObject *quoted(const unsigned char *text, Py_ssize_t length) {
    PyObject *result = PyBytes_FromStringAndSize(NULL, length + 2);
    if (result == NULL) return NULL;
    PyBytes_AS_STRING(result)[0] = '"';
    memcpy(PyBytes_AS_STRING(result) + 1, text, length);
    PyBytes_AS_STRING(result)[length + 1] = '"';
    return result;
}

/* The changes a resource needs, as FastPath.row finds them, into rows->splices: 1 when they are
 * all known, 0 when Python must decide, -1 on an error. */
static int changes(Rows *rows, PyObject *urn_map, PyObject *sealer, int report,
                   Py_ssize_t *unresolved) {
    Pass *pass = &rows->pass;
    const unsigned char *s = pass->s;
    Py_ssize_t n = pass->n, index;
    for (index = 0; index < pass->count; index++) {
        Member *member = &pass->members[index];
        if (member->kind == K_REFERENCE) {
            const unsigned char *reference = s + member->value_start, *mapped = reference;
            Py_ssize_t length = member->value_end - member->value_start, mapped_length = length;
            Py_ssize_t id_start, id_end, history;
            PyObject *owner, *text;
            int rc;
            if (member->value_start < 0) continue;
            rc = resolve(urn_map, reference, length, &mapped, &mapped_length, &owner);
            if (rc < 0 || rc == 2) return rc < 0 ? -1 : 0;
            if (rc == 0 && (starts(reference, length, "urn:uuid:") ||
                            starts(reference, length, "urn:oid:")))
                (*unresolved)++;
            if (patient_target(mapped, mapped_length, &id_start, &id_end, &history)) {
                Py_ssize_t end, display_start, display_end;
                if (!reference_object(s, n, member->key_start, member->value_start,
                                      member->value_end, &end, &display_start, &display_end)) {
                    Py_XDECREF(owner);
                    return 0;
                }
                text = reference_text(rows, mapped, mapped_length, s, display_start,
                                      display_end);
                Py_XDECREF(owner);
                if (text == NULL) return -1;
                if (text == Py_None) {
                    Py_DECREF(text);
                    return 0;
                }
                if (splice(rows, member->key_start - 1, end, text) < 0) return -1;
            } else if (rc == 1 && (mapped_length != length ||
                                   memcmp(mapped, reference, length) != 0)) {
                text = quoted(mapped, mapped_length);
                Py_XDECREF(owner);
                if (text == NULL || splice(rows, member->value_start - 1,
                                           member->value_end + 1, text) < 0)
                    return -1;
            } else {
                Py_XDECREF(owner);
            }
        } else if (sealer == NULL) {
            continue;
        } else if (member->kind == K_CONTENT_TYPE) {
            int rc;
            if (member->value_start < 0) return 0;
            rc = attachment(rows, s, n, member->key_start, sealer);
            if (rc <= 0) return rc;
        } else if (member->kind == K_PROTECTED || (member->kind == K_CONCLUSION && report)) {
            /* what Protector seals whole: a contentString anywhere, the resource's narrative
             * (text.div) and a report's conclusion, when they are strings; an annotation, or
             * a narrative or conclusion elsewhere, is left to the walk */
            const unsigned char *key = s + member->key_start + 1;
            int content = member->kind == K_PROTECTED && starts(key, n - member->key_start - 1,
                                                                "contentString\"");
            int narrative = member->kind == K_PROTECTED && member->where == X_TEXT &&
                            starts(key, n - member->key_start - 1, "div\"");
            int conclusion = member->kind == K_CONCLUSION && member->where == X_ROOT;
            PyObject *text;
            if (!(content || narrative || conclusion) || member->string_start < 0) return 0;
            text = sealed(rows, sealer, s + member->string_start,
                          member->string_end - member->string_start, member->value_start < 0);
            if (text == NULL ||
                splice(rows, member->string_start, member->string_end, text) < 0)
                return -1;
        }
    }
    return 1;
}

static int by_start(const void *left, const void *right) {
    Py_ssize_t a = ((const Splice *)left)->start, b = ((const Splice *)right)->start;
    return a < b ? -1 : a > b;
}

/* The row of one resource: 1 when appended, 0 when Python must decide, -1 on an error. */
static int add(Rows *rows, const unsigned char *s, Py_ssize_t n, PyObject *urn_map) {
    Pass *pass = &rows->pass;
    PyObject *patient = NULL, *sealer = NULL;
    Py_ssize_t unresolved = 0, index, position = 0;
    const unsigned char *type;
    Py_ssize_t type_length;
    int64_t micros = 0;
    int rc, has_updated;
    Batch *batch;
    Column *resource;
    char digest[32];

    pass_begin(pass, s, n);
    pass->head = 1;
    rc = read_resource(pass);
    if (rc != P_OK) return rc == P_ERROR ? -1 : 0;
    type = s + pass->type.start;
    type_length = pass->type.end - pass->type.start;
    if (pass->type.kind != V_STRING || !resource_type_ok(type, type_length)) return 0;
    if ((rc = fast_type(rows, type, type_length)) <= 0) return rc;
    if (pass->id.kind != V_STRING || !fhir_id_ok(s + pass->id.start, pass->id.end - pass->id.start))
        return 0;
    if ((pass->meta.kind != V_NONE && pass->meta.kind != V_OBJECT) ||
        (pass->version.kind != V_NONE && pass->version.kind != V_STRING) ||
        (pass->updated.kind != V_NONE && pass->updated.kind != V_STRING))
        return 0;
    has_updated = pass->updated.kind == V_STRING;
    if (has_updated && !instant_micros(s + pass->updated.start,
                                       pass->updated.end - pass->updated.start, &micros))
        return 0;
    if ((rc = find_patient(rows, urn_map, &patient)) <= 0) return rc;
    if (patient != NULL) sealer = PyTuple_GET_ITEM(patient, 1);
    rc = changes(rows, urn_map, sealer, key_is(type, type_length, "DiagnosticReport"),
                 &unresolved);
    if (rc <= 0) {
        Py_XDECREF(patient);
        return rc;
    }
    if (rows->splice_count > 1) /* (no array at all before the first splice) */
        qsort(rows->splices, rows->splice_count, sizeof(Splice), by_start);
    for (index = 0; index < rows->splice_count; index++) {
        if (rows->splices[index].start < position) {
            Py_XDECREF(patient);
            return 0; /* overlapping changes: let the walk do them */
        }
        position = rows->splices[index].end;
    }

    batch = batch_for(rows, (const char *)type, type_length, NULL);
    if (batch == NULL) goto error;
    batch->fast = 1;
    if (column_put(&batch->columns[COL_ID], batch->rows, s + pass->id.start,
                   pass->id.end - pass->id.start) < 0 ||
        column_put(&batch->columns[COL_VERSION], batch->rows,
                   pass->version.kind == V_STRING ? s + pass->version.start : NULL,
                   pass->version.end - pass->version.start) < 0 ||
        put_updated(batch, has_updated ? &micros : NULL) < 0)
        goto error;
    if (patient != NULL) {
        Py_ssize_t length;
        const char *pseudonym = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(patient, 0), &length);
        if (pseudonym == NULL ||
            column_put(&batch->columns[COL_PATIENT], batch->rows, pseudonym, length) < 0)
            goto error;
    } else if (column_put(&batch->columns[COL_PATIENT], batch->rows, NULL, 0) < 0) {
        goto error;
    }
    if (put_source(rows, batch) < 0) goto error;
    resource = &batch->columns[COL_RESOURCE];
    if (open_value(resource, batch->rows, 1) < 0) goto error;
    position = 0;
    for (index = 0; index < rows->splice_count; index++) {
        Splice *change = &rows->splices[index];
        if (put(&resource->data, s + position, change->start - position) < 0 ||
            put(&resource->data, PyBytes_AS_STRING(change->text),
                PyBytes_GET_SIZE(change->text)) < 0)
            goto error;
        position = change->end;
    }
    if (put(&resource->data, s + position, n - position) < 0 || close_value(resource) < 0)
        goto error;
    content_hash(rows, s, n, digest);
    if (column_put(&batch->columns[COL_HASH], batch->rows, digest, 32) < 0 ||
        column_put(&batch->columns[COL_OP], batch->rows, "upsert", 6) < 0)
        goto error;
    batch->rows++;
    rows->unresolved += unresolved;
    Py_XDECREF(patient);
    return 1;
error:
    Py_XDECREF(patient);
    return -1;
}

static PyObject *Rows_add(Rows *rows, PyObject *args) {
    Py_buffer body;
    PyObject *urn_map;
    int result;
    if (!PyArg_ParseTuple(args, "y*O!", &body, &PyDict_Type, &urn_map)) return NULL;
    result = add(rows, body.buf, body.len, urn_map);
    PyBuffer_Release(&body);
    release_splices(rows);
    if (result < 0) return NULL;
    return PyBool_FromLong(result);
}

static int put_text(Column *column, Py_ssize_t row, PyObject *value, const char *what) {
    const char *text;
    Py_ssize_t length;
    if (value == Py_None) return column_put(column, row, NULL, 0);
    if (!PyUnicode_Check(value)) {
        PyErr_Format(PyExc_TypeError, "a row's %s must be str or None", what);
        return -1;
    }
    text = PyUnicode_AsUTF8AndSize(value, &length);
    return text == NULL ? -1 : column_put(column, row, text, length);
}

/* append(resource_type, id, version_id, last_updated_us, patient_key, resource, content_hash, op):
 * a row decided in Python (the walk, a delete), with this Rows's source */
static PyObject *Rows_append(Rows *rows, PyObject *args) {
    PyObject *type, *id, *version, *updated, *patient, *resource, *hash, *op;
    Batch *batch;
    const char *key;
    Py_ssize_t length;
    int64_t micros = 0;
    if (!PyArg_ParseTuple(args, "UUOOOOOU", &type, &id, &version, &updated, &patient, &resource,
                          &hash, &op))
        return NULL;
    if (updated != Py_None) {
        micros = PyLong_AsLongLong(updated);
        if (micros == -1 && PyErr_Occurred()) return NULL;
    }
    key = PyUnicode_AsUTF8AndSize(type, &length);
    if (key == NULL || (batch = batch_for(rows, key, length, type)) == NULL) return NULL;
    if (put_text(&batch->columns[COL_ID], batch->rows, id, "id") < 0 ||
        put_text(&batch->columns[COL_VERSION], batch->rows, version, "version_id") < 0 ||
        put_updated(batch, updated == Py_None ? NULL : &micros) < 0 ||
        put_text(&batch->columns[COL_PATIENT], batch->rows, patient, "patient_key") < 0 ||
        put_source(rows, batch) < 0 ||
        put_text(&batch->columns[COL_RESOURCE], batch->rows, resource, "resource") < 0 ||
        put_text(&batch->columns[COL_HASH], batch->rows, hash, "content_hash") < 0 ||
        put_text(&batch->columns[COL_OP], batch->rows, op, "op") < 0)
        return NULL;
    batch->rows++;
    Py_RETURN_NONE;
}

/* take() -> [(resource_type, rows, (column, ...), (valid, values, nulls)), ...]: every batch's
 * buffers (a column is (valid, offsets, data, nulls), in the order of COLUMNS), the batches
 * emptied */
static PyObject *Rows_take(Rows *rows, PyObject *unused) {
    PyObject *result = PyList_New(0);
    Py_ssize_t index;
    if (result == NULL) return NULL;
    for (index = 0; index < rows->batch_count; index++) {
        Batch *batch = &rows->batches[index];
        PyObject *columns = PyTuple_New(COLUMNS), *item;
        int column;
        if (columns == NULL) goto error;
        for (column = 0; column < COLUMNS; column++) {
            PyObject *taken = column_take(&batch->columns[column]);
            if (taken == NULL) {
                Py_DECREF(columns);
                goto error;
            }
            PyTuple_SET_ITEM(columns, column, taken);
        }
        item = Py_BuildValue("(OnN(y#y#n))", batch->name, batch->rows, columns,
                             batch->updated_valid.data, batch->updated_valid.length,
                             batch->updated.data, batch->updated.length, batch->updated_nulls);
        if (item == NULL || PyList_Append(result, item) < 0) {
            Py_XDECREF(item);
            goto error;
        }
        Py_DECREF(item);
    }
    rows_clear_batches(rows);
    return result;
error:
    Py_DECREF(result);
    return NULL;
}

static PyObject *Rows_get_source(Rows *rows, void *closure) { return Py_NewRef(rows->source); }

static int Rows_set_source(Rows *rows, PyObject *value, void *closure) {
    if (value == NULL || !PyUnicode_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "source must be str");
        return -1;
    }
    Py_SETREF(rows->source, Py_NewRef(value));
    return 0;
}

static PyMethodDef Rows_methods[] = {
    {"add", (PyCFunction)Rows_add, METH_VARARGS,
     "add(body, urn_map) -> True when the row is appended, False when Python must decide"},
    {"append", (PyCFunction)Rows_append, METH_VARARGS,
     "append(resource_type, id, version_id, last_updated_us, patient_key, resource, "
     "content_hash, op): a row decided in Python"},
    {"take", (PyCFunction)Rows_take, METH_NOARGS, "take() -> every batch's Arrow buffers"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Rows_members[] = {
    {"unresolved", T_PYSSIZET, offsetof(Rows, unresolved), READONLY,
     "urn references no bundle entry resolved, in the rows added"},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef Rows_getset[] = {
    {"source", (getter)Rows_get_source, (setter)Rows_set_source, "the source of the rows added",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject RowsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "dlt_pipelines.fhir._scan.Rows",
    .tp_basicsize = sizeof(Rows),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Bronze rows gathered per resource type as Arrow buffers (see the module's text)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Rows_init,
    .tp_dealloc = (destructor)Rows_dealloc,
    .tp_traverse = (traverseproc)Rows_traverse,
    .tp_clear = (inquiry)Rows_clear,
    .tp_methods = Rows_methods,
    .tp_members = Rows_members,
    .tp_getset = Rows_getset,
};

/* entry(text) -> (spaced, (full_url, start, end, resource_type, id, method, url, last_modified))
 * for one bundle entry's text, as bundle() reads each of its entries; None when Python must read
 * it (a shape this pass leaves to it, text that is not JSON). */
static PyObject *entry(PyObject *self, PyObject *args) {
    Py_buffer text;
    Pass pass = {0};
    PyObject *found = NULL, *result = NULL;
    Py_ssize_t start, end;
    int rc;
    if (!PyArg_ParseTuple(args, "y*", &text)) return NULL;
    pass_begin(&pass, text.buf, text.len);
    pass.plain = 1;
    found = PyList_New(0);
    if (found == NULL) goto done;
    start = space(&pass, 0);
    rc = start < pass.n ? bundle_entry(&pass, start, &end, found) : P_INVALID;
    if (rc == P_OK && space(&pass, end) != pass.n) rc = P_INVALID;
    if (rc == P_OK) {
        result = Py_BuildValue("(OO)", pass.spaced ? Py_True : Py_False,
                               PyList_GET_ITEM(found, 0));
    } else if (rc != P_ERROR && !PyErr_Occurred()) {
        result = Py_NewRef(Py_None);
    }
done:
    Py_XDECREF(found);
    PyMem_Free(pass.members);
    PyBuffer_Release(&text);
    return result;
}

/* value_end(buffer, start) -> the end of the JSON value that starts at ``start`` (whitespace
 * before it skipped), found by its strings and brackets alone, without checking it: -1 when
 * the buffer ends first, -2 when no value starts there. It cuts a stream into values, which a
 * pass then reads. */
static PyObject *value_end(PyObject *self, PyObject *args) {
    Py_buffer buffer;
    Py_ssize_t i, n, depth = 0, result = -1;
    const unsigned char *s;
    if (!PyArg_ParseTuple(args, "y*n", &buffer, &i)) return NULL;
    s = buffer.buf;
    n = buffer.len;
    i = skip_space(s, n, i < 0 ? 0 : i);
    if (i >= n) goto done;
    if (s[i] != '{' && s[i] != '[' && s[i] != '"' && s[i] != '-' && !is_digit(s[i]) &&
        s[i] != 't' && s[i] != 'f' && s[i] != 'n') {
        result = -2;
        goto done;
    }
    while (i < n) {
        unsigned char c = s[i];
        if (c == '"') {
            const unsigned char *quote;
            Py_ssize_t j = i + 1;
            for (;;) {
                quote = memchr(s + j, '"', n - j);
                if (quote == NULL) goto done;
                j = quote - s;
                {
                    Py_ssize_t slashes = 0;
                    while (j - 1 - slashes > i && s[j - 1 - slashes] == '\\') slashes++;
                    if (slashes % 2 == 0) break;
                }
                j++;
            }
            i = j + 1;
            if (depth == 0) {
                result = i;
                goto done;
            }
            continue;
        }
        if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            if (--depth == 0) {
                result = i + 1;
                goto done;
            }
            if (depth < 0) {
                result = -2;
                goto done;
            }
        } else if (depth == 0) {
            /* a number or a literal: it ends where the next token begins */
            Py_ssize_t j = i;
            while (j < n && s[j] != ',' && s[j] != '}' && s[j] != ']' && !is_space(s[j])) j++;
            result = j < n ? j : -1;
            goto done;
        }
        i++;
    }
done:
    PyBuffer_Release(&buffer);
    return PyLong_FromSsize_t(result);
}

/* --- a load's Bloom filter (bronze.LoadIndex) ------------------------------------------------- */

#define BLOOM_HASHES 8

static uint64_t hash_bytes(const unsigned char *s, Py_ssize_t n, uint64_t seed) {
    uint64_t h = seed ^ ((uint64_t)n * 0x9FB21C651E98DF25ULL);
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t word;
        memcpy(&word, s + i, 8);
        h = (h ^ (word * 0xC2B2AE3D27D4EB4FULL)) * 0x9E3779B97F4A7C15ULL;
        h ^= h >> 32;
    }
    if (i < n) {
        uint64_t word = 0;
        memcpy(&word, s + i, n - i);
        h = (h ^ (word * 0xC2B2AE3D27D4EB4FULL)) * 0x9E3779B97F4A7C15ULL;
    }
    h ^= h >> 33;
    h *= 0xFF51AFD7ED558CCDULL;
    h ^= h >> 29;
    return h;
}

/* The values of an Arrow string array (its offsets and data buffers, its offset and length) and
 * each one's filter positions: calls ``visit`` with the BLOOM_HASHES bit positions of value i,
 * made from its hash by double hashing. */
static int bloom_walk(PyObject *args, Py_buffer *bits, int (*visit)(unsigned char *, uint64_t *,
                                                                    char *), PyObject **out) {
    Py_buffer offsets, data;
    Py_ssize_t offset, count, index, total;
    unsigned long long seed;
    const int32_t *ends;
    char *flags = NULL;
    int rc = -1;
    if (!PyArg_ParseTuple(args, "w*y*y*nnK", bits, &offsets, &data, &offset, &count, &seed))
        return -1;
    total = bits->len * 8;
    ends = offsets.buf;
    if (offset < 0 || count < 0 || (offset + count + 1) * 4 > offsets.len || total == 0 ||
        (total & (total - 1)) != 0) {
        PyErr_SetString(PyExc_ValueError, "bloom: offsets too short for the values, or a filter "
                                          "whose bit count is not a power of two");
        goto done;
    }
    *out = PyBytes_FromStringAndSize(NULL, count);
    if (*out == NULL) goto done;
    flags = PyBytes_AS_STRING(*out);
    for (index = 0; index < count; index++) {
        int32_t start = ends[offset + index], end = ends[offset + index + 1];
        uint64_t hash, step, positions[BLOOM_HASHES];
        int k, shift = 64 - __builtin_ctzll((unsigned long long)total);
        if (start < 0 || end < start || end > data.len) {
            PyErr_SetString(PyExc_ValueError, "bloom: an offset lies outside the data");
            Py_CLEAR(*out);
            goto done;
        }
        hash = hash_bytes((const unsigned char *)data.buf + start, end - start, seed);
        step = (hash * 0xC2B2AE3D27D4EB4FULL) | 1;
        for (k = 0; k < BLOOM_HASHES; k++) positions[k] = (hash + k * step) >> shift;
        visit(bits->buf, positions, flags + index);
    }
    rc = 0;
done:
    PyBuffer_Release(&offsets);
    PyBuffer_Release(&data);
    if (rc < 0) PyBuffer_Release(bits); /* the caller releases it after a success */
    return rc;
}

static int set_bits(unsigned char *bits, uint64_t *positions, char *flag) {
    int k;
    for (k = 0; k < BLOOM_HASHES; k++)
        bits[positions[k] >> 3] |= (unsigned char)(1 << (positions[k] & 7));
    *flag = 1;
    return 0;
}

static int test_bits(unsigned char *bits, uint64_t *positions, char *flag) {
    int k;
    *flag = 1;
    for (k = 0; k < BLOOM_HASHES; k++)
        if (!(bits[positions[k] >> 3] & (1 << (positions[k] & 7)))) *flag = 0;
    return 0;
}

/* bloom_add(bits, offsets, data, offset, count, seed): the values' bits set */
static PyObject *bloom_add(PyObject *self, PyObject *args) {
    Py_buffer bits;
    PyObject *out = NULL;
    if (bloom_walk(args, &bits, set_bits, &out) < 0) return NULL;
    PyBuffer_Release(&bits);
    Py_XDECREF(out);
    Py_RETURN_NONE;
}

/* bloom_test(bits, offsets, data, offset, count, seed) -> bytes: 1 for a value maybe added */
static PyObject *bloom_test(PyObject *self, PyObject *args) {
    Py_buffer bits;
    PyObject *out = NULL;
    if (bloom_walk(args, &bits, test_bits, &out) < 0) return NULL;
    PyBuffer_Release(&bits);
    return out;
}

/* --- configuration ---------------------------------------------------------------------------- */

static char *copy_bytes(const char *data, Py_ssize_t length) {
    char *copy = PyMem_Malloc(length ? length : 1);
    if (copy != NULL) memcpy(copy, data, length);
    return copy;
}

static void free_configuration(KeyClass *table, Py_ssize_t count, TypeDate *dates,
                               Py_ssize_t date_count) {
    Py_ssize_t index;
    for (index = 0; index < count; index++) PyMem_Free(table[index].name);
    for (index = 0; index < date_count; index++) {
        PyMem_Free(dates[index].type);
        PyMem_Free(dates[index].key);
    }
    PyMem_Free(table);
    PyMem_Free(dates);
}

/* configure([(name, class, kind), ...], [(resource_type, date_key), ...]) */
static PyObject *configure(PyObject *self, PyObject *args) {
    PyObject *entries, *dates = NULL;
    Py_ssize_t count, date_count, index;
    KeyClass *table;
    TypeDate *date_table;
    if (!PyArg_ParseTuple(args, "O!|O!", &PyList_Type, &entries, &PyList_Type, &dates))
        return NULL;
    count = PyList_GET_SIZE(entries);
    date_count = dates ? PyList_GET_SIZE(dates) : 0;
    table = PyMem_Calloc(count ? count : 1, sizeof(KeyClass));
    date_table = PyMem_Calloc(date_count ? date_count : 1, sizeof(TypeDate));
    if (table == NULL || date_table == NULL) {
        PyMem_Free(table);
        PyMem_Free(date_table);
        return PyErr_NoMemory();
    }
    for (index = 0; index < count; index++) {
        const char *name;
        Py_ssize_t length;
        int cls, kind;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(entries, index), "y#ii", &name, &length, &cls,
                              &kind))
            goto fail;
        table[index].name = copy_bytes(name, length);
        table[index].length = length;
        table[index].cls = cls;
        table[index].kind = kind;
    }
    for (index = 0; index < date_count; index++) {
        const char *type, *key;
        Py_ssize_t type_length, key_length;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(dates, index), "y#y#", &type, &type_length, &key,
                              &key_length))
            goto fail;
        date_table[index].type = copy_bytes(type, type_length);
        date_table[index].type_length = type_length;
        date_table[index].key = copy_bytes(key, key_length);
        date_table[index].key_length = key_length;
    }
    free_configuration(classes, class_count, type_dates, type_date_count);
    classes = table;
    class_count = count;
    memset(class_starts, 0, sizeof(class_starts));
    for (index = 0; index < count; index++)
        if (table[index].length > 0 && table[index].length < 64)
            class_starts[table[index].length][(unsigned char)table[index].name[0]] = 1;
    type_dates = date_table;
    type_date_count = date_count;
    Py_RETURN_NONE;
fail:
    free_configuration(table, count, date_table, date_count);
    return NULL;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS, "scan(body, type_date) -> list of members, or None"},
    {"bloom_add", bloom_add, METH_VARARGS,
     "bloom_add(bits, offsets, data, offset, count, seed): set the bits of Arrow string values"},
    {"bloom_test", bloom_test, METH_VARARGS,
     "bloom_test(bits, offsets, data, offset, count, seed) -> bytes, 1 where maybe added"},
    {"bundle", bundle, METH_VARARGS,
     "bundle(text) -> (type, spaced, entries), or None: a bundle's entries, see the source"},
    {"entry", entry, METH_VARARGS,
     "entry(text) -> (spaced, entry) or None: one bundle entry, as bundle() reads it"},
    {"value_end", value_end, METH_VARARGS,
     "value_end(buffer, start) -> end of the JSON value at start, -1 if cut off, -2 if none"},
    {"validate", validate, METH_VARARGS,
     "validate(body) -> 'ok', 'undecided' or 'invalid': what one pass makes of the text"},
    {"configure", configure, METH_VARARGS,
     "configure([(name, class, kind), ...], [(resource_type, date_key), ...])"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_scan", NULL, -1, methods};

PyMODINIT_FUNC PyInit__scan(void) {
    PyObject *created;
    int c;
    for (c = 0; c < 256; c++) stops[c] = c == '"' || c == '\\' || c < 0x20 || c >= 0x80;
    if (PyType_Ready(&RowsType) < 0) return NULL;
    created = PyModule_Create(&module);
    if (created == NULL) return NULL;
    if (PyModule_AddObjectRef(created, "Rows", (PyObject *)&RowsType) < 0) {
        Py_DECREF(created);
        return NULL;
    }
    return created;
}
