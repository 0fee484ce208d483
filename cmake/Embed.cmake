# File embedding: data compiled into the binary so the server needs no data
# files for its defaults. Included by server/CMakeLists.txt.
include_guard(GLOBAL)

# The weights are embedded with .incbin; enable_language must run at file scope.
enable_language(ASM)

# ghostserve_embed_models(<out_var> TEMPLATE <builtin_models.cc.in> MODELS <name>...)
#
# For each name, embeds models/<name>.json (as a string literal),
# models/<name>.safetensors (as .incbin bytes, 64-byte aligned) and, when the
# config has a "calibration" key, the file it names (relative to models/, as
# the server resolves it; .incbin bytes). Generates
# builtin_models.cc from TEMPLATE (which uses @BUILTIN_DECLS@ and
# @BUILTIN_ENTRIES@) and builtin_weights.S in the current binary dir, and sets
# <out_var> to the two generated sources. A model whose files are missing is
# skipped with a warning; a missing calibration file is left out with a
# warning (the model then loads in fp32 or bf16 only).
function(ghostserve_embed_models out_var)
  cmake_parse_arguments(ARG "" "TEMPLATE" "MODELS" ${ARGN})
  set(BUILTIN_ASM "")
  set(BUILTIN_ENTRIES "")
  set(BUILTIN_DECLS "")
  set(BUILTIN_DEPS "")
  foreach(m ${ARG_MODELS})
    set(json ${PROJECT_SOURCE_DIR}/models/${m}.json)
    set(weights ${PROJECT_SOURCE_DIR}/models/${m}.safetensors)
    if(NOT EXISTS ${json} OR NOT EXISTS ${weights})
      message(WARNING "models/${m}.json or its weights are missing; not built in")
      continue()
    endif()
    set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${json})
    list(APPEND BUILTIN_DEPS ${weights})
    file(READ ${json} text)
    string(APPEND BUILTIN_ASM
      "  .section .rodata\n  .balign 64\n  .global ghostserve_builtin_${m}\n"
      "ghostserve_builtin_${m}:\n  .incbin \"${weights}\"\n"
      "  .global ghostserve_builtin_${m}_end\nghostserve_builtin_${m}_end:\n")
    string(APPEND BUILTIN_DECLS
      "extern \"C\" const char ghostserve_builtin_${m}[];\n"
      "extern \"C\" const char ghostserve_builtin_${m}_end[];\n")
    set(calibration_view "std::string_view()")
    string(JSON calibration ERROR_VARIABLE no_calibration GET "${text}" calibration)
    if(no_calibration)
      set(calibration "")
    endif()
    if(NOT calibration STREQUAL "")
      if(NOT IS_ABSOLUTE ${calibration})
        set(calibration ${PROJECT_SOURCE_DIR}/models/${calibration})
      endif()
      if(EXISTS ${calibration})
        set(c ghostserve_builtin_${m}_calibration)
        list(APPEND BUILTIN_DEPS ${calibration})
        string(APPEND BUILTIN_ASM
          "  .section .rodata\n  .balign 8\n  .global ${c}\n"
          "${c}:\n  .incbin \"${calibration}\"\n"
          "  .global ${c}_end\n${c}_end:\n")
        string(APPEND BUILTIN_DECLS
          "extern \"C\" const char ${c}[];\n"
          "extern \"C\" const char ${c}_end[];\n")
        set(calibration_view "std::string_view(${c}, ${c}_end - ${c})")
      else()
        message(WARNING "models/${m}.json names calibration ${calibration}, which is missing; "
          "${m} is built in without it")
      endif()
    endif()
    string(APPEND BUILTIN_ENTRIES
      "    {\"${m}\", R\"ghostserve_json(${text})ghostserve_json\",\n"
      "     std::string_view(ghostserve_builtin_${m},\n"
      "                      ghostserve_builtin_${m}_end - ghostserve_builtin_${m}),\n"
      "     ${calibration_view}},\n")
  endforeach()
  string(APPEND BUILTIN_ASM "  .section .note.GNU-stack,\"\",@progbits\n")
  set(asm ${CMAKE_CURRENT_BINARY_DIR}/builtin_weights.S)
  set(cc ${CMAKE_CURRENT_BINARY_DIR}/builtin_models.cc)
  # Written via a .tmp + configure_file so an unchanged file keeps its mtime.
  file(WRITE ${asm}.tmp "${BUILTIN_ASM}")
  configure_file(${asm}.tmp ${asm} COPYONLY)
  configure_file(${ARG_TEMPLATE} ${cc} @ONLY)
  set_source_files_properties(${asm} PROPERTIES OBJECT_DEPENDS "${BUILTIN_DEPS}")
  set(${out_var} ${cc} ${asm} PARENT_SCOPE)
endfunction()

# ghostserve_embed_text(<out_var> FILE <text file> TEMPLATE <x.cc.in> VARIABLE <NAME>)
#
# Reads FILE into @NAME@ of TEMPLATE and generates <x.cc> (the template's name
# without .in) in the current binary dir; <out_var> is set to that source.
# Editing FILE re-runs the configure step.
function(ghostserve_embed_text out_var)
  cmake_parse_arguments(ARG "" "FILE;TEMPLATE;VARIABLE" "" ${ARGN})
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${ARG_FILE})
  file(READ ${ARG_FILE} ${ARG_VARIABLE})
  get_filename_component(name ${ARG_TEMPLATE} NAME)
  string(REGEX REPLACE "\\.in$" "" name ${name})
  configure_file(${ARG_TEMPLATE} ${CMAKE_CURRENT_BINARY_DIR}/${name} @ONLY)
  set(${out_var} ${CMAKE_CURRENT_BINARY_DIR}/${name} PARENT_SCOPE)
endfunction()
