/* t_chat.h -- the reference cases' "messages" (JSON) as chat_msg, for the
 * tests of chat and prompt. The strings stay owned by the JSON. */
#ifndef T_CHAT_H
#define T_CHAT_H

#include <jansson.h>

#include "chat/chat.h"

/* Fill msgs[0..cap) from the array jm; returns how many it holds (more
 * than cap: the caller's CHECK fails, the rest are left out). */
static size_t t_chat_msgs(const json_t *jm, chat_msg *msgs, size_t cap) {
    size_t n = json_array_size(jm);
    for (size_t i = 0; i < n && i < cap; i++) {
        json_t *m = json_array_get(jm, i);
        msgs[i].role = json_string_value(json_object_get(m, "role"));
        msgs[i].content = json_string_value(json_object_get(m, "content"));
        msgs[i].content_len = json_string_length(json_object_get(m, "content"));
    }
    return n;
}

#endif
