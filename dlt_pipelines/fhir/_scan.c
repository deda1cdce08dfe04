/* The fast path's scan of a resource's JSON text, compiled (see fastpath.py).
 *
 * scan(body, type_date) walks the JSON tokens of body once. For every object key it looks up the
 * key's class (configured from Python: date elements by kind, references, protected elements).
 * A date element's string value is checked here against the FHIR R4 grammar of its kind; the
 * members the Python side acts on (references and protected elements) are returned as tuples
 * (kind, key_start, value_start, value_end), value_start being -1 when the value is not a string
 * without escapes.
 * It returns None when the fast path cannot decide: a key with an escape, an escaped string in a
 * date element or a reference, a date that fails its check, or text that is not well formed.
 *
 * body must be valid JSON (the caller has decoded its head with msgspec).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

enum { C_NONE = 0, C_DATETIME = 1, C_DATE = 2, C_INSTANT = 3, C_MEMBER = 4 };

typedef struct {
    char *name;
    Py_ssize_t length;
    int cls;
    int kind; /* for C_MEMBER: the kind returned to Python */
} KeyClass;

static KeyClass *classes = NULL;
static Py_ssize_t class_count = 0;

static int is_digit(char c) { return c >= '0' && c <= '9'; }

static int two(const char *s, int low, int high) {
    int value;
    if (!is_digit(s[0]) || !is_digit(s[1])) return 0;
    value = (s[0] - '0') * 10 + (s[1] - '0');
    return value >= low && value <= high;
}

/* YYYY, not 0000 */
static int year(const char *s) {
    return is_digit(s[0]) && is_digit(s[1]) && is_digit(s[2]) && is_digit(s[3]) &&
           !(s[0] == '0' && s[1] == '0' && s[2] == '0' && s[3] == '0');
}

/* hh:mm:ss(.f{1,9})?(Z|(+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00)) from s, exactly n bytes */
static int time_and_zone(const char *s, Py_ssize_t n) {
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

/* YYYY(-MM(-DD)?)?; *end gets how far the date went when full is 0 */
static int date_part(const char *s, Py_ssize_t n, Py_ssize_t *end) {
    if (n < 4 || !year(s)) return 0;
    if (n == 4) { *end = 4; return 1; }
    if (s[4] != '-' || n < 7 || !two(s + 5, 1, 12)) return 0;
    if (n == 7) { *end = 7; return 1; }
    if (s[7] != '-' || n < 10 || !two(s + 8, 1, 31)) return 0;
    *end = 10;
    return 1;
}

static int check(int cls, const char *s, Py_ssize_t n) {
    Py_ssize_t end = 0;
    if (!date_part(s, n, &end)) return 0;
    if (cls == C_DATE) return end == n;
    if (cls == C_INSTANT) return end == 10 && n > 11 && s[10] == 'T' &&
                                 time_and_zone(s + 11, n - 11);
    /* dateTime: a date, or a full date with a time and a zone */
    if (end == n) return 1;
    return end == 10 && n > 11 && s[10] == 'T' && time_and_zone(s + 11, n - 11);
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

static int ends_with(const char *s, Py_ssize_t n, const char *tail) {
    Py_ssize_t t = (Py_ssize_t)strlen(tail);
    return n >= t && memcmp(s + n - t, tail, t) == 0;
}

static int classify(const char *key, Py_ssize_t n, const char *type_date, Py_ssize_t type_len,
                    int *kind) {
    Py_ssize_t index;
    if (type_len && n == type_len && memcmp(key, type_date, n) == 0) return C_DATE;
    for (index = 0; index < class_count; index++) {
        if (classes[index].length == n && memcmp(classes[index].name, key, n) == 0) {
            *kind = classes[index].kind;
            return classes[index].cls;
        }
    }
    if (ends_with(key, n, "Date") || ends_with(key, n, "DateTime")) return C_DATETIME;
    return C_NONE;
}

/* the index just past a string's closing quote, from its opening quote at i; -1 if unclosed */
static Py_ssize_t string_end(const char *s, Py_ssize_t n, Py_ssize_t i, int *escaped) {
    Py_ssize_t j = i + 1;
    *escaped = 0;
    while (j < n) {
        const char *quote = memchr(s + j, '"', n - j);
        const char *slash;
        Py_ssize_t q;
        if (quote == NULL) return -1;
        q = quote - s;
        slash = memchr(s + j, '\\', q - j);
        if (slash == NULL) return q + 1;
        *escaped = 1;
        j = (slash - s) + 2;
    }
    return -1;
}

static PyObject *scan(PyObject *self, PyObject *args) {
    Py_buffer body, type_date;
    PyObject *found = NULL, *item;
    const char *s;
    Py_ssize_t n, i = 0;
    if (!PyArg_ParseTuple(args, "y*y*", &body, &type_date)) return NULL;
    s = (const char *)body.buf;
    n = body.len;
    found = PyList_New(0);
    if (found == NULL) goto fail;
    while (i < n) {
        const char *quote = memchr(s + i, '"', n - i);
        Py_ssize_t key_start, key_end, k;
        int escaped, cls, kind = 0;
        if (quote == NULL) break;
        key_start = quote - s;
        key_end = string_end(s, n, key_start, &escaped);
        if (key_end < 0) goto undecided;
        k = key_end;
        while (k < n && is_space(s[k])) k++;
        if (k >= n || s[k] != ':') { i = key_end; continue; } /* a string value, not a key */
        if (escaped) goto undecided;
        cls = classify(s + key_start + 1, key_end - key_start - 2, type_date.buf, type_date.len,
                       &kind);
        k++;
        while (k < n && is_space(s[k])) k++;
        i = k;
        if (cls == C_NONE) continue;
        if (k < n && s[k] == '"') {
            int value_escaped;
            Py_ssize_t value_end = string_end(s, n, k, &value_escaped);
            if (value_end < 0) goto undecided;
            i = value_end;
            if (cls != C_MEMBER) {
                if (value_escaped || !check(cls, s + k + 1, value_end - k - 2)) goto undecided;
                continue;
            }
            if (value_escaped) {
                if (kind == 1) goto undecided; /* a reference: the walk reads it decoded */
                item = Py_BuildValue("(innn)", kind, key_start, (Py_ssize_t)-1, (Py_ssize_t)-1);
            } else {
                item = Py_BuildValue("(innn)", kind, key_start, k + 1, value_end - 1);
            }
        } else {
            if (cls != C_MEMBER) continue; /* only string dates are checked, as in the walk */
            item = Py_BuildValue("(innn)", kind, key_start, (Py_ssize_t)-1, (Py_ssize_t)-1);
        }
        if (item == NULL || PyList_Append(found, item) < 0) { Py_XDECREF(item); goto fail; }
        Py_DECREF(item);
    }
    PyBuffer_Release(&body);
    PyBuffer_Release(&type_date);
    return found;
undecided:
    Py_XDECREF(found);
    PyBuffer_Release(&body);
    PyBuffer_Release(&type_date);
    Py_RETURN_NONE;
fail:
    Py_XDECREF(found);
    PyBuffer_Release(&body);
    PyBuffer_Release(&type_date);
    return NULL;
}

/* configure([(name, class, kind), ...]) */
static PyObject *configure(PyObject *self, PyObject *args) {
    PyObject *entries;
    Py_ssize_t count, index;
    KeyClass *table;
    if (!PyArg_ParseTuple(args, "O!", &PyList_Type, &entries)) return NULL;
    count = PyList_GET_SIZE(entries);
    table = PyMem_Calloc(count ? count : 1, sizeof(KeyClass));
    if (table == NULL) return PyErr_NoMemory();
    for (index = 0; index < count; index++) {
        const char *name;
        Py_ssize_t length;
        int cls, kind;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(entries, index), "y#ii", &name, &length, &cls,
                              &kind)) {
            Py_ssize_t done;
            for (done = 0; done < index; done++) PyMem_Free(table[done].name);
            PyMem_Free(table);
            return NULL;
        }
        table[index].name = PyMem_Malloc(length ? length : 1);
        memcpy(table[index].name, name, length);
        table[index].length = length;
        table[index].cls = cls;
        table[index].kind = kind;
    }
    for (index = 0; index < class_count; index++) PyMem_Free(classes[index].name);
    PyMem_Free(classes);
    classes = table;
    class_count = count;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS, "scan(body, type_date) -> list of members, or None"},
    {"configure", configure, METH_VARARGS, "configure([(name, class, kind), ...])"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_scan", NULL, -1, methods};

PyMODINIT_FUNC PyInit__scan(void) { return PyModule_Create(&module); }
